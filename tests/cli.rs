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
