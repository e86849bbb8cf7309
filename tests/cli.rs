//! The `tether` binary: `check` on the examples and on bad files.

use std::path::Path;
use std::process::Command;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

#[test]
fn every_example_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = tether().arg("check").arg(&path).output().expect("run tether");
            assert!(
                out.status.success(),
                "{} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "expected at least four examples, found {checked}");
}

#[test]
fn a_bad_config_fails_check_naming_file_line_and_fix() {
    let dir = std::env::temp_dir().join(format!("tether-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    // TOML text on purpose: the error must name the file, line and column.
    std::fs::write(
        &path,
        "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
         [[backend]]\nname = \"web\"\nbalance = \"leastcon\"\n\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = tether().arg("check").arg(&path).output().expect("run tether");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:8:", path.display())), "{stderr}");
    assert!(
        stderr.contains("leastconn"),
        "the error should list the valid names: {stderr}"
    );
    let missing = tether().arg("check").arg(dir.join("missing.toml")).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_with_a_bad_config_exits_before_listening() {
    let dir = std::env::temp_dir().join(format!("tether-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "workers = 0\n").unwrap();
    let out = tether()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run tether");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:1:"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hash_password_prints_an_argon2id_hash_of_stdin() {
    use std::io::Write;
    let mut child = tether()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tether");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse\n")
        .expect("write password");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).expect("utf-8");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(tether::admin::auth::verify_password("correct horse", hash.trim()));
}

#[test]
fn check_refuses_an_admin_listener_without_users_off_loopback() {
    let dir = std::env::temp_dir().join(format!("tether-cli-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("admin.toml");
    // TOML text on purpose: the error must name the line of `bind`.
    std::fs::write(
        &path,
        "[admin]\nbind = \"0.0.0.0:9000\"\n\n[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let out = tether().arg("check").arg(&path).output().expect("run tether");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("admin.toml:2:") && stderr.contains("loopback"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A temporary directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with one frontend on `bind`, an unreachable server and a loopback admin listener.
fn config_binding(bind: &str) -> String {
    format!(
        "[[frontend]]\nname = \"public\"\nbind = [\"{bind}\"]\ndefault_backend = \"web\"\n\n\
         [[backend]]\nname = \"web\"\n\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\n\
         [admin]\nbind = \"127.0.0.1:0\"\n"
    )
}

#[test]
fn errors_name_their_cause_once_in_one_style() {
    let dir = scratch("once");
    let missing = tether().arg("check").arg(dir.join("missing.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = dir.join("busy.toml");
    std::fs::write(&path, config_binding(&busy.local_addr().unwrap().to_string())).unwrap();
    let out = tether().arg("run").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().find(|l| l.contains("error")).unwrap_or_default();
    assert!(error.starts_with("error: "), "{stderr}");
    assert_eq!(error.matches("Address already in use").count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_logs_to_a_pipe_without_colour_and_names_the_admin_listener_once() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = scratch("pipe");
    let path = dir.join("ok.toml");
    std::fs::write(&path, config_binding("127.0.0.1:0")).unwrap();
    let mut child = tether()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let frontend = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tether stopped: {seen}");
        seen.push_str(&line);
        if let Some(rest) = line.split("addresses=[").nth(1) {
            break rest.split(']').next().unwrap().to_string();
        }
    };
    // One request, so the access log writes a line.
    let mut stream = std::net::TcpStream::connect(&frontend).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    // Until both the access line and the admin listener's start line are in
    // (the admin listener starts in its own task: its line may come late).
    while !(seen.contains("kind=http") && seen.contains("admin listening")) {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tether stopped: {seen}");
        seen.push_str(&line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever it wrote before it was stopped.
    stderr.read_to_string(&mut seen).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    assert!(!seen.contains('\u{1b}'), "colour escapes in a pipe: {seen:?}");
    assert_eq!(seen.matches("admin listening").count(), 1, "{seen}");
    assert!(!seen.contains("Some("), "{seen}");
    let access = seen.lines().find(|l| l.contains("kind=http")).unwrap();
    assert!(
        access.contains("frontend=public backend=web server=-"),
        "names written one way: {access}"
    );
}

#[test]
fn check_validates_an_acme_block_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("tether-cli-acme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("acme.toml");
    let text = |acme: &str| {
        format!(
            "[[frontend]]\nname = \"secure\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\
             tls = {{ acme = {{ {acme} }} }}\n\n\
             [[backend]]\nname = \"web\"\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
        )
    };
    // A good block passes without contacting the CA or creating the cache.
    std::fs::write(
        &path,
        text("domains = [\"ws.example.com\"], contact = \"mailto:ops@example.com\", cache = \"acme-cache\""),
    )
    .unwrap();
    let out = tether().arg("check").arg(&path).output().expect("run tether");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("acme-cache").exists(), "check writes nothing");
    for (acme, column, fix) in [
        (
            "domains = [\"ws.example.com\"], contact = \"ops@example.com\"",
            58,
            "mailto:",
        ),
        ("domains = []", 28, "`domains` is empty"),
        ("domains = [\"*.example.com\"]", 29, "wildcard"),
    ] {
        std::fs::write(&path, text(acme)).unwrap();
        let out = tether().arg("check").arg(&path).output().expect("run tether");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{}:5:{column}", path.display())),
            "{acme}: {stderr}"
        );
        assert!(stderr.contains(fix), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_refuses_an_unknown_access_log_field_at_its_line_and_column() {
    let dir = scratch("log-format");
    let path = dir.join("bad-format.toml");
    // TOML text on purpose: the column is the `$` of the misspelt field, after `\"` escapes.
    std::fs::write(
        &path,
        format!(
            "{}\n[log]\nlog_format = \"$client \\\"$method $uri\\\" $stauts\"\n",
            config_binding("127.0.0.1:0")
        ),
    )
    .unwrap();
    let out = tether().arg("check").arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:17:40: `log_format`: unknown access-log field `$stauts`",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("$status") && stderr.contains("$request_id"),
        "the known fields: {stderr}"
    );
}

/// Runs `tether run` over one request (`GET /cli-line`) with `args` and
/// `env`, stops it with SIGTERM, and returns its standard error.
/// A connection to `address` once the tether started on it listens (10 s at most).
fn connect_when_listening(address: &str) -> std::net::TcpStream {
    let started = std::time::Instant::now();
    loop {
        match std::net::TcpStream::connect(address) {
            Ok(stream) => return stream,
            Err(err) => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(10),
                    "tether never listened on {address}: {err}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

fn run_one_request(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let dir = scratch(name);
    let path = dir.join("ok.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let frontend = format!("127.0.0.1:{port}");
    std::fs::write(&path, config_binding(&frontend)).unwrap();
    let mut command = tether();
    command.args(args).arg("run").arg("--config").arg(&path);
    command.env_remove("TETHER_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut stream = connect_when_listening(&frontend);
    stream
        .write_all(b"GET /cli-line HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 502"), "{reply}");
    let mut seen = String::new();
    // The access line, if any, has been written within 100 ms of the request.
    std::thread::sleep(std::time::Duration::from_millis(400));
    // SIGTERM: a graceful stop, after which buffered lines are written.
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    stderr.read_to_string(&mut seen).unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    seen
}

#[test]
fn log_format_json_makes_the_access_log_json_and_tether_log_can_silence_it() {
    let json = run_one_request("json-lines", &["--log-format", "json"], &[]);
    let line = json
        .lines()
        .find(|l| l.contains("/cli-line"))
        .unwrap_or_else(|| panic!("an access line: {json}"));
    let value: serde_json::Value = serde_json::from_str(line).expect(line);
    assert_eq!(value["kind"], "http", "{line}");
    assert_eq!(value["status"], 502, "{line}");
    assert_eq!(value["target"], "tether::access", "{line}");
    for filter in ["warn", "info,tether::access=off"] {
        let quiet = run_one_request("quiet", &[], &[("TETHER_LOG", filter)]);
        assert!(!quiet.contains("/cli-line"), "TETHER_LOG={filter}: {quiet}");
    }
}

#[test]
fn sigusr1_reopens_the_access_log_file_after_rotation() {
    use std::io::Read;
    let dir = scratch("usr1");
    let path = dir.join("ok.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let frontend = format!("127.0.0.1:{port}");
    std::fs::write(
        &path,
        format!(
            "{}\n[log]\naccess = \"access.log\"\nlog_format = \"$uri $status\"\n",
            config_binding(&frontend)
        ),
    )
    .unwrap();
    let mut child = tether()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |target: &str| {
        use std::io::Write;
        let mut stream = connect_when_listening(&frontend);
        let request = format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream.read_to_string(&mut String::new()).unwrap();
    };
    let log = dir.join("access.log");
    let wait_for = |file: &Path, text: &str| {
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(file).unwrap_or_default().contains(text) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{text} in {}",
                file.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    get("/before-rotation");
    wait_for(&log, "/before-rotation 502");
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    std::process::Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    // The signal is taken asynchronously: ask until a line lands in the new file.
    let started = std::time::Instant::now();
    while !log.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no new access.log after SIGUSR1"
        );
        get("/after-rotation");
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    wait_for(&log, "/after-rotation 502");
    child.kill().unwrap();
    child.wait().unwrap();
    let rotated = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(rotated.starts_with("/before-rotation 502\n"), "{rotated}");
}
