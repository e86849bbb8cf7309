//! `tether demo`: its simulated users spread over the echo servers, and its
//! page's buttons (add a server, kill one, drain one, bring it back) act on
//! tether through its admin API and on the demo's own echo servers. Once in
//! headless Chromium (the page's DOM and the API at each step), once over
//! the demo page's HTTP endpoints alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tether::demo::{Demo, DemoOptions};
use tether_test_support::*;

const USERS: usize = 60;

/// A demo on free ports, quick enough for a test: users stay 1–3 s, checks
/// every 200 ms, drains close after 500 ms.
async fn start_demo() -> (
    SocketAddr,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut options = DemoOptions::new(any, any, any);
    options.users.count = USERS;
    options.users.stay_min = Duration::from_secs(1);
    options.users.stay_max = Duration::from_secs(3);
    options.users.message_every = Duration::from_millis(500);
    options.check_interval = Duration::from_millis(200);
    options.drain_timeout = Duration::from_millis(500);
    options.spread = Duration::from_millis(300);
    // As `tether demo` does (its users would fill the output with access lines).
    quiet_access_log_unless_captured();
    let demo = Demo::prepare(options).await.expect("the demo starts");
    let (page, admin) = (demo.page(), demo.admin());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(demo.run(async move {
        let _ = stopped.await;
    }));
    (page, admin, stop, running)
}

/// `echo`'s servers from the API at `addr` (tether's admin listener, or the
/// demo page's copy of it): name → (tunnels, state, source).
async fn servers(addr: SocketAddr) -> BTreeMap<String, (u64, String, String)> {
    let (_, json) = admin_call(addr, Method::GET, "/api/v1/backends", None).await;
    json["backends"][0]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            let text = |key: &str| s[key].as_str().unwrap_or_default().to_string();
            (
                text("name"),
                (s["tunnels"].as_u64().unwrap_or_default(), text("state"), text("source")),
            )
        })
        .collect()
}

/// Waits up to 10 s until `check` holds for the servers at `addr`; returns them.
async fn until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&BTreeMap<String, (u64, String, String)>) -> bool,
) -> BTreeMap<String, (u64, String, String)> {
    let mut last = BTreeMap::new();
    let held = eventually(Duration::from_secs(10), async || {
        last = servers(addr).await;
        check(&last)
    })
    .await;
    assert!(held.is_some(), "{what}: {last:?}");
    last
}

/// Sends `request` to `addr` as is and returns its status.
async fn raw_status(addr: SocketAddr, request: http::Request<String>) -> u16 {
    let (parts, body) = request.into_parts();
    let mut text = format!("{} {} HTTP/1.1\r\n", parts.method, parts.uri);
    for (name, value) in &parts.headers {
        text.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    text.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let answer = raw_exchange(addr, text.as_bytes()).await;
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"))
}

fn tunnels_of(report: &Value, step: &str, side: &str, server: &str) -> u64 {
    report["steps"][step][side][server]["tunnels"]
        .as_u64()
        .unwrap_or_else(|| panic!("{step}/{side}/{server}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_the_demo_page_shows_users_fail_over_drain_and_spread_to_a_new_server() {
    let Some(binary) = chromium_or_skip() else {
        return;
    };
    let (page, admin, stop, running) = start_demo().await;
    let args = [format!("http://{page}/"), format!("http://{admin}/"), USERS.to_string()];
    let report = run_browser_script("demo.mjs", &args, &binary, Duration::from_secs(90)).await;
    assert!(report["error"].is_null(), "{report}");

    // Spread: every user on one of the three servers, in the page and in the API.
    let spread: Vec<u64> = ["echo-1", "echo-2", "echo-3"]
        .iter()
        .map(|s| tunnels_of(&report, "spread", "api", s))
        .collect();
    assert!(spread.iter().all(|&n| n > 0), "{report}");
    assert!(spread.iter().sum::<u64>() >= USERS as u64 - 3, "{report}");
    // Added: a fourth server, from the API, taking users.
    assert_eq!(report["steps"]["added"]["api"]["echo-4"]["source"], "api", "{report}");
    assert!(tunnels_of(&report, "added", "api", "echo-4") > 0, "{report}");
    // Killed: down, with no tunnel left; its users are on the others.
    assert_eq!(report["steps"]["killed"]["api"]["echo-1"]["state"], "down", "{report}");
    assert_eq!(tunnels_of(&report, "killed", "api", "echo-1"), 0, "{report}");
    assert_eq!(report["steps"]["killed"]["page"]["echo-1"]["width"], "0%", "{report}");
    // Drained: no tunnel left.
    assert_eq!(
        report["steps"]["drained"]["api"]["echo-2"]["state"], "drain",
        "{report}"
    );
    assert_eq!(tunnels_of(&report, "drained", "api", "echo-2"), 0, "{report}");
    // Brought back: both take users again.
    for name in ["echo-1", "echo-2"] {
        assert_eq!(report["steps"]["back"]["api"][name]["state"], "up", "{report}");
        assert!(tunnels_of(&report, "back", "api", name) > 0, "{name}: {report}");
    }
    assert_eq!(
        report["rebalanceBefore"], "",
        "no rebalance line without the field: {report}"
    );
    assert_eq!(
        report["rebalanceActive"], "rebalancing: shed 9 so far, target \u{2264} 17 per server (over: echo-3)",
        "{report}"
    );
    assert_eq!(report["rebalanceNullHidden"], true, "{report}");
    assert_eq!(report["statsLink"], format!("http://{admin}/"), "{report}");
    for step in ["spread", "added", "killed", "drained", "back"] {
        println!(
            "{step}: {} ms, {}",
            report["steps"][step]["ms"], report["steps"][step]["api"]
        );
    }
    println!("{}", report["summary"]);
    let _ = stop.send(());
    running.await.unwrap();
}

/// The same story without a browser, over the demo page's endpoints (what
/// its buttons call), so it is checked wherever Chromium is missing too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_endpoints_add_kill_drain_and_bring_back_servers() {
    let (page, admin, stop, running) = start_demo().await;
    until(page, "the users spread over three servers", |s| {
        s.len() == 3
            && s.values().all(|(n, _, _)| *n > 0)
            && s.values().map(|(n, _, _)| n).sum::<u64>() >= USERS as u64 - 3
    })
    .await;

    let (status, added) = admin_call(page, Method::POST, "/demo/servers", None).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["name"], "echo-4");
    assert_eq!(added["source"], "api");
    until(admin, "echo-4 takes users", |s| {
        s.get("echo-4").is_some_and(|(n, _, _)| *n > 0)
    })
    .await;

    let (status, _) = admin_call(page, Method::POST, "/demo/servers/echo-1/kill", None).await;
    assert_eq!(status, 200);
    until(admin, "echo-1 is down and empty, its users elsewhere", |s| {
        s["echo-1"].0 == 0 && s["echo-1"].1 == "down" && s.values().map(|(n, _, _)| n).sum::<u64>() >= USERS as u64 - 2
    })
    .await;
    let (_, state) = admin_call(page, Method::GET, "/demo/state", None).await;
    assert_eq!(state["killed"], serde_json::json!(["echo-1"]), "{state}");

    let (status, _) = admin_call(page, Method::POST, "/demo/servers/echo-2/drain", None).await;
    assert_eq!(status, 200);
    until(admin, "echo-2 drained empty", |s| {
        s["echo-2"].0 == 0 && s["echo-2"].1 == "drain"
    })
    .await;

    for name in ["echo-1", "echo-2"] {
        let (status, body) = admin_call(page, Method::POST, &format!("/demo/servers/{name}/back"), None).await;
        assert_eq!(status, 200, "{body}");
    }
    until(admin, "both back and taking users", |s| {
        ["echo-1", "echo-2"].iter().all(|n| s[*n].0 > 0 && s[*n].1 == "up")
    })
    .await;
    let (_, state) = admin_call(page, Method::GET, "/demo/state", None).await;
    assert_eq!(state["killed"], serde_json::json!([]), "{state}");

    // Unknown servers are 404; another page may not press the buttons, nor
    // a page whose name is re-pointed at 127.0.0.1 read anything.
    let (status, _) = admin_call(page, Method::POST, "/demo/servers/nope/kill", None).await;
    assert_eq!(status, 404);
    let kill = "/demo/servers/echo-3/kill";
    let from = |origin: &str, host: &str| {
        http::Request::post(kill)
            .header(http::header::HOST, host.to_string())
            .header(http::header::ORIGIN, origin.to_string())
            .body(String::new())
            .unwrap()
    };
    let elsewhere = raw_status(page, from("http://evil.example", &page.to_string())).await;
    assert_eq!(elsewhere, 403, "a POST from another origin");
    let rebound = raw_status(page, from("http://evil.example:80", "evil.example:80")).await;
    assert_eq!(rebound, 421, "a request naming another host");
    assert_eq!(servers(admin).await["echo-3"].1, "up", "echo-3 was not killed");
    let _ = stop.send(());
    running.await.unwrap();
}
