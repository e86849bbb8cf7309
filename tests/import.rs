//! `tether import haproxy|nginx FILE`: the real binary on fixture configs in
//! the shape of the classic tutorials (tests/fixtures/import/), each output
//! checked by `tether check`; exit codes 0 (all translated), 2 (something
//! not, with `# not translated:` comments and stderr warnings), 1 (unparsable).

use std::path::{Path, PathBuf};
use std::process::Command;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

/// What one import printed.
struct Imported {
    code: Option<i32>,
    toml: String,
    stderr: String,
}

/// Runs `tether import KIND FILE` on a copy of the fixture in a fresh folder
/// (where certificates may be written next to it).
fn import_in(dir: &Path, kind: &str, name: &str) -> Imported {
    let copy = dir.join(name);
    std::fs::copy(fixture(name), &copy).expect("copy fixture");
    let out = tether()
        .args(["import", kind])
        .arg(&copy)
        .output()
        .expect("run tether import");
    Imported {
        code: out.status.code(),
        toml: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-import-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the TOML next to the fixture and runs `tether check` on it.
fn assert_checks(dir: &Path, imported: &Imported, name: &str) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, &imported.toml).unwrap();
    let out = tether().arg("check").arg(&path).output().expect("run tether check");
    assert!(
        out.status.success(),
        "the import of {name} fails `tether check`: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        imported.toml
    );
}

/// Imports a fixture, asserts its exit code and that the TOML passes `tether check`.
fn import_checked(kind: &str, name: &str, code: i32) -> Imported {
    let dir = temp_dir(name);
    let imported = import_in(&dir, kind, name);
    assert_eq!(
        imported.code,
        Some(code),
        "{name}: {}\n{}",
        imported.stderr,
        imported.toml
    );
    assert_checks(&dir, &imported, name);
    std::fs::remove_dir_all(&dir).ok();
    imported
}

fn value(toml: &str) -> toml::Value {
    toml::from_str(toml).expect("the import is TOML")
}

/// The one backend named `name`.
fn backend<'a>(config: &'a toml::Value, name: &str) -> &'a toml::Value {
    config["backend"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no backend {name}"))
}

/// Asserts that `line` of the fixture is reported as not translated, in the
/// TOML and on stderr, with `reason` in both.
fn assert_not_translated(imported: &Imported, file: &str, line: usize, reason: &str) {
    let marker = format!("{file}:{line}  ");
    assert!(
        imported
            .toml
            .lines()
            .any(|l| l.starts_with("# not translated: ") && l.contains(&marker) && l.contains(reason)),
        "no `# not translated:` comment for line {line} with `{reason}`:\n{}",
        imported.toml
    );
    let warning = format!("{file}:{line}: not translated:");
    assert!(
        imported
            .stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains(&warning) && l.contains(reason)),
        "no warning for line {line} with `{reason}`:\n{}",
        imported.stderr
    );
}

#[test]
fn haproxy_socketio_tutorial_translates_completely() {
    let imported = import_checked("haproxy", "haproxy-socketio.cfg", 0);
    assert!(imported.stderr.is_empty(), "{}", imported.stderr);
    assert!(!imported.toml.contains("not translated"));
    // Every piece names its source line.
    assert!(imported
        .toml
        .contains("haproxy-socketio.cfg:30  balance leastconn\nbalance = \"leastconn\""));
    assert!(imported
        .toml
        .contains("haproxy-socketio.cfg:31  cookie SERVERID insert indirect nocache\n"));
    let config = value(&imported.toml);
    assert_eq!(config["workers"].as_integer(), Some(2));
    let frontend = &config["frontend"][0];
    assert_eq!(frontend["bind"][0].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(frontend["default_backend"].as_str(), Some("web"));
    let route = &frontend["route"][0];
    assert_eq!(route["backend"].as_str(), Some("websockets"));
    assert_eq!(
        route["any"].as_array().unwrap().len(),
        3,
        "the three is_websocket lines are ORed"
    );
    assert_eq!(route["any"][0]["path_prefix"].as_str(), Some("/socket.io"));
    assert_eq!(route["any"][2]["host_prefix"].as_str(), Some("ws"));
    let ws = backend(&config, "websockets");
    assert_eq!(ws["balance"].as_str(), Some("leastconn"));
    assert_eq!(ws["sticky"]["cookie"].as_str(), Some("SERVERID"));
    assert_eq!(ws["sticky"]["mode"].as_str(), Some("insert"));
    assert_eq!(ws["sticky"]["indirect"].as_bool(), Some(true));
    assert_eq!(ws["sticky"]["nocache"].as_bool(), Some(true));
    assert_eq!(
        ws["sticky"]["httponly"].as_bool(),
        Some(false),
        "HAProxy sets HttpOnly only when asked"
    );
    assert_eq!(ws["health"]["check"].as_str(), Some("http"));
    assert_eq!(ws["health"]["path"].as_str(), Some("/health"));
    assert_eq!(ws["health"]["expect_status"].as_str(), Some("200"));
    assert_eq!(ws["health"]["interval"].as_str(), Some("2s"));
    assert_eq!(ws["timeouts"]["tunnel"].as_str(), Some("1h"), "inherited from defaults");
    assert_eq!(ws["redispatch"].as_bool(), Some(true));
    assert_eq!(ws["server"][1]["cookie"].as_str(), Some("s2"));
    assert_eq!(ws["server"][0]["maxconn"].as_integer(), Some(1024));
    assert_eq!(backend(&config, "web")["health"]["check"].as_str(), Some("tcp"));
    assert_eq!(frontend["forward_headers"][0].as_str(), Some("x-forwarded-for"));
}

#[test]
fn haproxy_balance_source_and_url_param_layouts_translate() {
    let source = value(&import_checked("haproxy", "haproxy-source.cfg", 0).toml);
    let ws = backend(&source, "ws");
    assert_eq!(ws["balance"].as_str(), Some("source"));
    assert_eq!(ws["hash"].as_str(), Some("consistent"));
    assert_eq!(
        ws["redispatch"].as_bool(),
        Some(false),
        "no option redispatch: HAProxy's default"
    );
    assert_eq!(source["frontend"][0]["bind"][0].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(
        source["frontend"][0]["forward_headers"].as_array().map(Vec::len),
        Some(0)
    );

    let url_param = value(&import_checked("haproxy", "haproxy-url-param.cfg", 0).toml);
    let chat = backend(&url_param, "chat");
    assert_eq!(chat["balance"].as_str(), Some("url_param"));
    assert_eq!(chat["hash_key"].as_str(), Some("session_id"));
    assert_eq!(chat["hash"].as_str(), Some("map"));
    assert_eq!(chat["timeouts"]["tunnel"].as_str(), Some("2h"));
}

#[test]
fn haproxy_every_directive_is_translated_or_reported() {
    let file = "haproxy-everything.cfg";
    let imported = import_checked("haproxy", file, 2);
    let config = value(&imported.toml);
    assert_eq!(config["workers"].as_integer(), Some(4));
    let public = &config["frontend"][0];
    assert_eq!(public["timeouts"]["client_body"].as_str(), Some("40s"));
    assert_eq!(
        public["timeouts"]["client"].as_str(),
        Some("3s"),
        "http-keep-alive wins over client"
    );
    assert_eq!(public["timeouts"]["http_request"].as_str(), Some("8s"));
    assert_eq!(public["maxconn"].as_integer(), Some(3000));
    let routes = public["route"].as_array().unwrap();
    let find = |backend: &str, key: &str, selector: &str| {
        routes.iter().any(|r| {
            r["backend"].as_str() == Some(backend)
                && r.get(key)
                    .and_then(|c| c.as_array())
                    .is_some_and(|c| c.iter().any(|c| c.get(selector).is_some()))
        })
    };
    assert!(
        find("sio", "all", "path_prefix") && find("sio", "all", "header"),
        "`||` makes two routes"
    );
    assert!(
        find("api", "all", "host") && find("api", "all", "method"),
        "`a b` is one route with both"
    );
    assert!(
        find("api", "all", "path") && find("api", "all", "path_regex"),
        "path and path_end"
    );
    assert!(find("rooms", "all", "query") && find("rooms", "all", "host_prefix"));
    assert!(find("hashed", "all", "path_regex"), "-i on a path is a (?i) regex");
    assert!(find("api", "any", "method"), "METH_GET is GET or HEAD");
    let web = backend(&config, "web");
    assert_eq!(web["balance"].as_str(), Some("uri"));
    assert_eq!(web["balance_factor"].as_float(), Some(1.5));
    assert_eq!(web["sticky"]["mode"].as_str(), Some("prefix"));
    assert_eq!(web["health"]["rise"].as_integer(), Some(3));
    assert_eq!(web["health"]["timeout"].as_str(), Some("1s"));
    assert_eq!(web["queue_timeout"].as_str(), Some("6s"));
    assert_eq!(web["retries"].as_integer(), Some(2));
    let servers = web["server"].as_array().unwrap();
    assert!(
        servers.iter().all(|s| s["name"].as_str() != Some("w3")),
        "the backup server is left out"
    );
    assert_eq!(servers[2]["state"].as_str(), Some("maint"), "disabled");
    let sio = backend(&config, "sio");
    assert_eq!(sio["sticky"]["max_age"].as_str(), Some("12h"));
    assert_eq!(sio["sticky"]["samesite"].as_str(), Some("lax"));
    assert_eq!(sio["sticky"]["domain"].as_str(), Some("example.com"));
    assert_eq!(sio["health"]["host"].as_str(), Some("sio.internal"));
    assert_eq!(sio["health"]["expect_status"].as_str(), Some("200-299"));
    assert_eq!(sio["server"][0]["tls"]["verify"].as_bool(), Some(false));
    let api = backend(&config, "api");
    assert_eq!(api["health"]["method"].as_str(), Some("OPTIONS"));
    assert_eq!(api["health"]["expect_body"].as_str(), Some("ok"));
    let rooms = backend(&config, "rooms");
    assert_eq!(rooms["balance"].as_str(), Some("header"));
    assert_eq!(rooms["hash_key"].as_str(), Some("X-Room"));
    assert_eq!(
        rooms["sticky"]["learn"]["response_cookie"].as_str(),
        Some("room_session")
    );
    assert_eq!(rooms["sticky"]["match"][0]["cookie"].as_str(), Some("room_session"));
    assert_eq!(rooms["sticky"]["idle_timeout"].as_str(), Some("20m"));
    assert_eq!(rooms["sticky"]["max_entries"].as_integer(), Some(10 * 1024));
    let hashed = backend(&config, "hashed");
    assert_eq!(hashed["balance"].as_str(), Some("random"));
    assert_eq!(hashed["redispatch"].as_bool(), Some(false));
    assert_eq!(backend(&config, "source_pool")["balance"].as_str(), Some("source"));
    let admin = &config["admin"];
    assert_eq!(
        admin["bind"].as_str(),
        Some("127.0.0.1:8404"),
        "the stats listen becomes [admin]"
    );
    assert!(config["frontend"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"].as_str() != Some("stats")));

    for (line, reason) in [
        (4, "process-wide"),
        (5, "service manager"),
        (11, "access log"),
        (27, "accept-proxy"),
        (49, "negate"),
        (50, "hdr_end(host)"),
        (51, "hdr_sub(User-Agent)"),
        (52, "client address"),
        (53, "negate"),
        (55, "rules"),
        (65, "backup"),
        (70, "maxidle"),
        (74, "send-proxy"),
        (95, "stick store-response"),
        (96, "balance source"),
        (101, "roundrobin, leastconn"),
        (102, "rewrite"),
        (114, "stats page is at /"),
        (115, "stats realm"),
        (116, "tether hash-password"),
        (119, "section"),
        (129, "backup"),
        (128, "backend `spare` has no server tether can use"),
        (125, "backend `spare` has no server tether can use"),
        (126, "backend `spare` has no server tether can use"),
    ] {
        assert_not_translated(&imported, &fixture_path_in_output(&imported, file), line, reason);
    }
    assert!(imported.stderr.contains("directive(s) not translated"));
    let spare = config["frontend"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str() == Some("spare_in"));
    let spare = spare.expect("the frontend stays");
    assert!(spare.get("route").is_none() && spare.get("default_backend").is_none());
    assert!(config["backend"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["name"].as_str() != Some("spare")));
}

/// The file name as the import printed it (the temporary copy's path).
fn fixture_path_in_output(imported: &Imported, file: &str) -> String {
    let first = imported.toml.lines().next().unwrap_or_default();
    let path = first.rsplit(' ').next().unwrap_or_default();
    assert!(path.ends_with(file), "{first}");
    path.to_string()
}

#[test]
fn haproxy_ssl_crt_binds_become_a_tls_frontend() {
    let dir = temp_dir("haproxy-tls");
    write_certificate(&dir, "site.pem", "site.pem");
    let imported = import_in(&dir, "haproxy", "haproxy-tls.cfg");
    assert_eq!(imported.code, Some(0), "{}", imported.stderr);
    assert_checks(&dir, &imported, "haproxy-tls.cfg");
    let config = value(&imported.toml);
    let frontends = config["frontend"].as_array().unwrap();
    assert_eq!(frontends.len(), 2, "plain and TLS binds are two frontends");
    assert_eq!(frontends[1]["name"].as_str(), Some("https_in-tls"));
    assert_eq!(frontends[1]["bind"][0].as_str(), Some("127.0.0.1:8443"));
    assert_eq!(frontends[1]["tls"]["cert"].as_str(), Some("site.pem"));
    assert_eq!(frontends[1]["tls"]["key"].as_str(), Some("site.pem"));
    assert!(frontends[0].get("tls").is_none());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unparsable_files_exit_1_naming_file_and_line() {
    for (kind, name, line, why) in [
        ("haproxy", "haproxy-broken.cfg", 6, "no ACL named `is_websocket`"),
        ("nginx", "nginx-broken.conf", 6, "never closed"),
    ] {
        let dir = temp_dir(name);
        let imported = import_in(&dir, kind, name);
        assert_eq!(imported.code, Some(1), "{name}");
        assert!(
            imported.toml.is_empty(),
            "nothing is printed for a file that cannot be read"
        );
        let expected = format!("{}:{line}: ", dir.join(name).display());
        assert!(
            imported.stderr.contains(&expected) && imported.stderr.contains(why),
            "{name}: {}",
            imported.stderr
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    let missing = tether()
        .args(["import", "nginx", "/nonexistent/nginx.conf"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn nginx_ip_hash_tutorial_translates_completely() {
    let imported = import_checked("nginx", "nginx-ip-hash.conf", 0);
    assert!(imported.stderr.is_empty(), "{}", imported.stderr);
    assert!(
        imported.toml.contains("(built in: the WebSocket Connection idiom"),
        "{}",
        imported.toml
    );
    let config = value(&imported.toml);
    assert_eq!(config["workers"].as_integer(), Some(2));
    let ws = backend(&config, "websocket");
    assert_eq!(ws["balance"].as_str(), Some("source"));
    assert_eq!(ws["server"].as_array().unwrap().len(), 3);
    assert_eq!(ws["timeouts"]["tunnel"].as_str(), Some("1h"));
    assert_eq!(ws["timeouts"]["connect"].as_str(), Some("5s"));
    assert_eq!(config["frontend"][0]["default_backend"].as_str(), Some("websocket"));
}

#[test]
fn nginx_hash_consistent_and_location_ws_layouts_translate() {
    let consistent = value(&import_checked("nginx", "nginx-hash-consistent.conf", 0).toml);
    let chat = backend(&consistent, "chat");
    assert_eq!(chat["balance"].as_str(), Some("source"));
    assert_eq!(chat["hash"].as_str(), Some("consistent"));
    assert_eq!(chat["server"][0]["weight"].as_integer(), Some(2));
    assert_eq!(chat["server"][1]["maxconn"].as_integer(), Some(100));
    assert_eq!(chat["timeouts"]["tunnel"].as_str(), Some("3600s"));
    assert_eq!(chat["timeouts"]["connect"].as_str(), Some("60s"), "NGINX's default");
    let route = &consistent["frontend"][0]["route"][0];
    assert_eq!(route["any"][0]["path_prefix"].as_str(), Some("/chat"));

    let ws = value(&import_checked("nginx", "nginx-location-ws.conf", 0).toml);
    let frontend = &ws["frontend"][0];
    assert_eq!(frontend["route"][0]["backend"].as_str(), Some("app"));
    assert_eq!(frontend["default_backend"].as_str(), Some("127.0.0.1-9100"));
    let forward: Vec<&str> = frontend["forward_headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(forward, ["x-forwarded-for", "x-forwarded-proto"]);
    assert_eq!(backend(&ws, "app")["balance"].as_str(), Some("leastconn"));
}

#[test]
fn nginx_every_directive_is_translated_or_reported() {
    let file = "nginx-everything.conf";
    let imported = import_checked("nginx", file, 2);
    let config = value(&imported.toml);
    assert_eq!(config["workers"].as_integer(), Some(3));
    let fe = &config["frontend"][0];
    assert_eq!(fe["timeouts"]["client"].as_str(), Some("20s"));
    assert_eq!(fe["timeouts"]["http_request"].as_str(), Some("7s"));
    assert_eq!(fe["timeouts"]["client_body"].as_str(), Some("9s"));
    assert_eq!(fe["limits"]["max_body"].as_integer(), Some(2 * 1024 * 1024));
    assert_eq!(fe["default_backend"].as_str(), Some("p2c"));
    let all_routes = fe["route"].as_array().unwrap();
    // The virtual host on the same address comes first, each route asking for its hosts.
    fn hosts(r: &toml::Value) -> Vec<&str> {
        r.get("any")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.get("host").and_then(|h| h.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }
    assert_eq!(hosts(&all_routes[0]), ["other.example.com", "www.other.example.com"]);
    assert_eq!(all_routes[0]["backend"].as_str(), Some("by_arg"));
    assert_eq!(all_routes[0]["all"][0]["path_prefix"].as_str(), Some("/chat"));
    assert_eq!(all_routes[1]["backend"].as_str(), Some("by_uri"), "its `location /`");
    assert!(all_routes[1].get("all").is_none());
    let routes = &all_routes[2..];
    assert!(routes.iter().all(|r| hosts(r).is_empty()));
    let order: Vec<&str> = routes.iter().filter_map(|r| r["backend"].as_str()).collect();
    assert_eq!(order[0], "sticky_cookie", "`=` first");
    assert_eq!(order[1], "learned", "then `^~`");
    assert_eq!(&order[2..4], ["routed", "by_arg"], "then regexes in file order");
    assert_eq!(routes[0]["any"][0]["path"].as_str(), Some("/exact"));
    assert_eq!(routes[3]["any"][0]["path_regex"].as_str(), Some("(?i)\\.(png|jpg)$"));
    let sticky = backend(&config, "sticky_cookie");
    assert_eq!(sticky["sticky"]["cookie"].as_str(), Some("srv_id"));
    assert_eq!(sticky["sticky"]["max_age"].as_str(), Some("1h"));
    assert_eq!(sticky["sticky"]["samesite"].as_str(), Some("lax"));
    assert_eq!(sticky["sticky"]["httponly"].as_bool(), Some(true));
    assert_eq!(sticky["server"][0]["weight"].as_integer(), Some(3));
    assert_eq!(sticky["server"][0]["maxconn"].as_integer(), Some(50));
    assert_eq!(sticky["server"][1]["state"].as_str(), Some("maint"));
    assert_eq!(sticky["server"].as_array().unwrap().len(), 3, "the backup is left out");
    assert_eq!(sticky["timeouts"]["connect"].as_str(), Some("4s"));
    assert_eq!(sticky["timeouts"]["tunnel"].as_str(), Some("90s"));
    let learned = backend(&config, "learned");
    assert_eq!(
        learned["sticky"]["learn"]["response_cookie"].as_str(),
        Some("sessionid")
    );
    assert_eq!(learned["sticky"]["match"][0]["cookie"].as_str(), Some("sessionid"));
    assert_eq!(learned["sticky"]["idle_timeout"].as_str(), Some("45m"));
    let by_arg = backend(&config, "by_arg");
    assert_eq!(
        (by_arg["balance"].as_str(), by_arg["hash_key"].as_str()),
        (Some("url_param"), Some("room"))
    );
    assert_eq!(by_arg["hash"].as_str(), Some("consistent"));
    let by_header = backend(&config, "by_header");
    assert_eq!(
        (by_header["balance"].as_str(), by_header["hash_key"].as_str()),
        (Some("header"), Some("x-tenant"))
    );
    let by_cookie = backend(&config, "by_cookie");
    assert_eq!(
        (by_cookie["balance"].as_str(), by_cookie["hash_key"].as_str()),
        (Some("cookie"), Some("uid"))
    );
    assert_eq!(backend(&config, "by_uri")["balance"].as_str(), Some("uri"));
    assert_eq!(backend(&config, "p2c")["balance"].as_str(), Some("random"));
    let forward: Vec<&str> = fe["forward_headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(forward, ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]);
    let redirect = config["frontend"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f.get("redirect_https").and_then(|v| v.as_bool()) == Some(true));
    assert!(
        redirect.is_some(),
        "return 301 https://$host$request_uri is redirect_https"
    );

    let path = fixture_path_in_output(&imported, file);
    for (line, reason) in [
        (2, "service manager"),
        (7, "maxconn"),
        (11, "included file"),
        (24, "maps other than the Upgrade idiom"),
        (32, "backup"),
        (33, "max_fails"),
        (45, "sticky cookie"),
        (81, "random"),
        (86, "$remote_addr"),
        (94, "X-Real-IP"),
        (98, "writes to a server"),
        (138, "rewrites the path"),
        (140, "only proxies"),
        (143, "named locations"),
        (151, "differs from the first block's"),
        (167, "wildcard"),
    ] {
        assert_not_translated(&imported, &path, line, reason);
    }
}

#[test]
fn nginx_ssl_listen_with_its_certificate_becomes_a_tls_frontend() {
    let dir = temp_dir("nginx-tls");
    write_certificate(&dir, "site.crt", "site.key");
    let imported = import_in(&dir, "nginx", "nginx-tls.conf");
    assert_eq!(imported.code, Some(2), "ssl_protocols is reported: {}", imported.stderr);
    assert!(imported.stderr.contains("ssl_protocols"));
    assert_checks(&dir, &imported, "nginx-tls.conf");
    let config = value(&imported.toml);
    let tls = &config["frontend"][1];
    assert_eq!(tls["name"].as_str(), Some("secure.example.com-tls"));
    assert_eq!(tls["tls"]["cert"].as_str(), Some("site.crt"));
    assert_eq!(tls["tls"]["key"].as_str(), Some("site.key"));
    assert_eq!(tls["bind"][0].as_str(), Some("127.0.0.1:8443"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A self-signed certificate for localhost: `cert` and `key` files in `dir`
/// (the same file gets both, as HAProxy's `crt` expects, when the names agree).
fn write_certificate(dir: &Path, cert: &str, key: &str) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let pair = rcgen::KeyPair::generate().unwrap();
    let certificate = params.self_signed(&pair).unwrap();
    if cert == key {
        std::fs::write(dir.join(cert), format!("{}{}", certificate.pem(), pair.serialize_pem())).unwrap();
    } else {
        std::fs::write(dir.join(cert), certificate.pem()).unwrap();
        std::fs::write(dir.join(key), pair.serialize_pem()).unwrap();
    }
}

#[test]
fn haproxy_stats_listener_becomes_admin_and_asks_for_rehashed_passwords() {
    let file = "haproxy-stats.cfg";
    let imported = import_checked("haproxy", file, 2);
    let config = value(&imported.toml);
    assert_eq!(
        config["admin"]["bind"].as_str(),
        Some("127.0.0.1:8404"),
        "without users tether serves the admin address on loopback only"
    );
    assert!(config["admin"].get("users").is_none(), "no password is invented");
    assert_eq!(config["frontend"].as_array().map(Vec::len), Some(1));
    assert!(imported
        .toml
        .contains("# note: tether serves an admin address other than loopback only with `users`"));
    let path = fixture_path_in_output(&imported, file);
    assert_not_translated(
        &imported,
        &path,
        16,
        "passwords must be re-hashed with `tether hash-password`",
    );
    assert_not_translated(&imported, &path, 14, "loopback");
    assert!(imported.toml.contains("stats auth admin:****"), "{}", imported.toml);
    assert!(
        !imported.toml.contains("s3cret") && !imported.stderr.contains("s3cret"),
        "the password is not copied"
    );
}
