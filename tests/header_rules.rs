//! `request_headers` / `response_headers` of backends and routes: headers
//! set and removed on plain HTTP and on WebSocket handshakes (and their 101),
//! after tether's own forwarding headers; the route's rules win; framing and
//! hop-by-hop headers are refused by `tether check`.

use std::process::Command;

use http::{Request, StatusCode};

use tether_test_support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn request(path: &str, headers: &[(&'static str, &str)]) -> Request<TestBody> {
    let mut request = get_request(path);
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(http::HeaderName::from_static(name), value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn request_rules_set_and_remove_headers_after_the_forwarding_headers() {
    let s1 = backend("s1").start().await;
    let backend = pool()
        .server(&s1)
        .request_set("X-App", "1")
        .request_set("X-Forwarded-Proto", "https")
        .request_remove("X-Debug");
    let tether = start_tether(&Config::over(backend)).await;
    let mut client = http_client(tether.addr).await;
    let (status, _, _) = send(
        &mut client,
        request("/", &[("x-debug", "on"), ("x-app", "client"), ("x-kept", "k")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = s1.last_headers();
    assert_eq!(seen["x-app"], "1", "set replaces the client's value");
    assert_eq!(seen.get_all("x-app").iter().count(), 1);
    assert!(seen.get("x-debug").is_none(), "removed: {seen:?}");
    assert_eq!(seen["x-kept"], "k");
    assert_eq!(
        seen["x-forwarded-proto"], "https",
        "the operator's rule comes after tether's own forwarding header"
    );
    assert!(
        seen.contains_key("x-forwarded-for"),
        "tether's other forwarding headers stay"
    );
}

#[tokio::test]
async fn response_rules_set_and_remove_headers_the_client_sees() {
    let s1 = backend("s1").start().await;
    let backend = pool()
        .server(&s1)
        .response_remove("X-Server")
        .response_set("X-Served-By", "tether");
    let tether = start_tether(&Config::over(backend)).await;
    let (status, headers, body) = get(tether.addr, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"s1", "the body is the server's");
    assert!(headers.get("x-server").is_none(), "removed: {headers:?}");
    assert_eq!(headers["x-served-by"], "tether");
}

#[tokio::test]
async fn rules_apply_to_a_websocket_handshake_and_to_its_101() {
    let s1 = backend("s1").start().await;
    let backend = pool()
        .server(&s1)
        .request_set("X-App", "1")
        .request_remove("X-Debug")
        .response_remove("X-Server")
        .response_set("X-Served-By", "tether");
    let tether = start_tether(&Config::over(backend)).await;
    let mut handshake = format!("ws://{}/ws", tether.addr).into_client_request().unwrap();
    handshake.headers_mut().insert("x-debug", "on".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(handshake).await.expect("handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(next_text(&mut ws).await, "s1", "the tunnel works");
    let seen = s1.last_headers();
    assert!(
        seen.contains_key("sec-websocket-key"),
        "this was the handshake: {seen:?}"
    );
    assert_eq!(seen["x-app"], "1");
    assert!(seen.get("x-debug").is_none(), "removed: {seen:?}");
    assert!(response.headers().get("x-server").is_none(), "{:?}", response.headers());
    assert_eq!(response.headers()["x-served-by"], "tether");
}

#[tokio::test]
async fn a_route_rule_wins_over_its_backend_rule_of_the_same_name() {
    let s1 = backend("s1").start().await;
    let backend = pool()
        .server(&s1)
        .request_set("X-App", "backend")
        .request_set("X-Team", "b")
        .response_set("X-Layer", "backend");
    let route = Route::to("pool")
        .path_prefix("/r")
        .request_set("X-App", "route")
        .request_remove("X-Team")
        .response_set("X-Layer", "route");
    let tether = start_tether(&Config::simple(Frontend::public().route(route), backend)).await;

    let (_, headers, _) = get(tether.addr, "/r/x").await;
    let seen = s1.last_headers();
    assert_eq!(seen["x-app"], "route");
    assert!(
        seen.get("x-team").is_none(),
        "the route removes what the backend set: {seen:?}"
    );
    assert_eq!(headers["x-layer"], "route");

    let (_, headers, _) = get(tether.addr, "/elsewhere").await;
    let seen = s1.last_headers();
    assert_eq!(seen["x-app"], "backend", "without the route, the backend's rules alone");
    assert_eq!(seen["x-team"], "b");
    assert_eq!(headers["x-layer"], "backend");
}

const HEAD: &str = "[[frontend]]\nname = \"public\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"web\"\n\n\
                    [[backend]]\nname = \"web\"\n";
const TAIL: &str = "\n[[backend.server]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";

#[test]
fn a_framing_or_hop_by_hop_header_fails_check_with_its_line_and_column() {
    let dir = std::env::temp_dir().join(format!("tether-header-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (rule, why) in [
        ("request_headers = { remove = [\"Connection\"] }", "hop-by-hop"),
        (
            "request_headers = { set = { \"Transfer-Encoding\" = \"chunked\" } }",
            "frames the message",
        ),
        (
            "response_headers = { set = { \"Content-Length\" = \"0\" } }",
            "frames the message",
        ),
        (
            "response_headers = { remove = [\"Sec-WebSocket-Accept\"] }",
            "WebSocket handshake",
        ),
    ] {
        // TOML text on purpose: the error must name the file, line and column.
        let path = dir.join("rules.toml");
        std::fs::write(&path, format!("{HEAD}{rule}\n{TAIL}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tether"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("run tether");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{rule}: {stderr}");
        let column = rule.find('"').unwrap() + 1;
        assert!(
            stderr.contains(&format!("{}:8:{column}:", path.display())),
            "{rule}: {stderr}"
        );
        assert!(
            stderr.contains(why) && stderr.contains("cannot change"),
            "{rule}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn invalid_header_names_and_values_are_refused_at_load() {
    for (rule, why) in [
        (
            "request_headers = { set = { \"X App\" = \"1\" } }",
            "not a valid header name",
        ),
        ("response_headers = { remove = [\"\"] }", "not a valid header name"),
        (
            "request_headers = { set = { \"X-App\" = \"a\\u0000b\" } }",
            "not a valid header value",
        ),
        ("response_headers = { set = { Host = \"h\" } }", "request header"),
    ] {
        let text = format!("{HEAD}{rule}\n{TAIL}");
        match tether::config::parse(&text, "t.toml") {
            Err(tether::config::ConfigError::Invalid { line, message, .. }) => {
                assert_eq!(line, 8, "{rule}: {message}");
                assert!(message.contains(why), "{rule}: {message}");
            }
            other => panic!("{rule}: expected an error, got {other:?}"),
        }
    }
    let text = format!(
        "{HEAD}request_headers = {{ set = {{ Host = \"internal\" }} }}\nresponse_headers = {{ set = {{ \"X-A\" = \"1\" }}, remove = [\"Server\"] }}\n{TAIL}"
    );
    tether::config::parse(&text, "t.toml").expect("Host may be set on requests");
}
