//! Access-log lines: one per HTTP exchange with its request id, one per
//! finished tunnel with bytes, messages and the WebSocket close codes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tether_test_support::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The access-log lines of every test in this file.
fn access_lines() -> &'static Captured {
    captured_access_lines()
}

#[tokio::test]
async fn access_lines_carry_the_request_id_and_tunnel_close_codes() {
    let captured = access_lines();

    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    // A refused handshake: its request id is in the response and in the log.
    let reply = raw_exchange(
        tether.addr,
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let id = reply
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("x-request-id header")
        .trim()
        .to_string();
    let (mut ws, _) = ws_connect(tether.addr, "/ws").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "hello");
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}

    let mut tunnel = None;
    for _ in 0..100 {
        tunnel = captured.lines().into_iter().find(|l| l["kind"] == "tunnel");
        if tunnel.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tunnel = tunnel.expect("a tunnel line");
    assert_eq!(tunnel["close_code_in"], 1000, "{tunnel}");
    assert_eq!(tunnel["close_code_out"], 1000, "the server echoed the close: {tunnel}");
    assert_eq!(
        tunnel["messages_in"], 1,
        "hello (control frames are not messages): {tunnel}"
    );
    assert_eq!(tunnel["server"], "s1");
    let http = captured
        .lines()
        .into_iter()
        .find(|l| l["kind"] == "http" && l["status"] == 400)
        .expect("the 400 line");
    assert_eq!(http["request_id"], id.as_str(), "{http}");
    assert!(http["error"].as_str().unwrap().contains("Sec-WebSocket-Key"), "{http}");
}

#[tokio::test]
async fn session_ids_in_query_strings_are_redacted_in_access_lines() {
    let captured = access_lines();
    let s1 = backend("s1").start().await;
    let tether = start_tether(&Config::over(pool().server(&s1)).redact_query(&["sid", "token"])).await;
    let (status, _, _) = get(
        tether.addr,
        "/socket.io/?EIO=4&transport=polling&sid=s3cr3t-sid&token=t0k3n&t=1",
    )
    .await;
    assert_eq!(status, 200);
    let mut line = None;
    for _ in 0..100 {
        line = captured
            .lines()
            .into_iter()
            .find(|l| l["kind"] == "http" && l["uri"].as_str().is_some_and(|u| u.starts_with("/socket.io/")));
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = line.expect("the request's access line");
    assert_eq!(
        line["uri"], "/socket.io/?EIO=4&transport=polling&sid=REDACTED&token=REDACTED&t=1",
        "{line}"
    );
    assert!(
        !captured.text().contains("s3cr3t-sid"),
        "the id appears nowhere in the logs"
    );
    // By default `sid` alone is redacted.
    let tether = start_tether(&Config::over(pool().server(&s1))).await;
    get(tether.addr, "/default/?sid=other-secret&token=visible").await;
    for _ in 0..100 {
        if captured.text().contains("/default/") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = captured.text();
    assert!(text.contains("/default/?sid=REDACTED&token=visible"), "{text}");
}

// --- formats, destinations, dropped lines -----------------------------------

/// A scratch folder of its own for one test.
fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-access-log-{}-{tag}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the client side knows of one exchange: its own address and the body length.
struct Sent {
    client: std::net::SocketAddr,
    body_len: usize,
}

/// A GET of `path` from a connection of our own, so the client address is known.
async fn request(addr: std::net::SocketAddr, path: &str) -> Sent {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).to_string();
    let (head, body) = reply.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    Sent {
        client,
        body_len: body.len(),
    }
}

/// Opens a WebSocket from a connection of our own, sends `hello`, reads
/// its echo and closes with 1000; returns the client address.
async fn tunnel(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let mut shake = ws_handshake_on(stream, &format!("ws://{addr}/ws"), None)
        .await
        .expect("handshake");
    assert_eq!(shake.server, "s1");
    shake.ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_text(&mut shake.ws).await, "hello");
    shake
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
    while let Some(Ok(_)) = shake.ws.next().await {}
    client
}

/// The lines of `file` once it holds `count` of them (within 5 s).
async fn lines_of(file: &std::path::Path, count: usize) -> Vec<String> {
    let read = || -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    };
    let held = eventually(Duration::from_secs(5), async || read().len() >= count).await;
    assert!(
        held.is_some(),
        "{count} lines expected in {}:\n{:?}",
        file.display(),
        read()
    );
    read()
}

/// Checks a line's timestamp (RFC 3339, UTC, µs, this minute or the last)
/// and returns it.
fn checked_time(time: &str) -> String {
    let now = std::time::SystemTime::now();
    let minute = |at: std::time::SystemTime| {
        let mut out = Vec::new();
        tether::access_log::time::Civil::of(at).write_rfc3339(&mut out);
        String::from_utf8(out).unwrap()[..16].to_string()
    };
    let recent = [minute(now), minute(now - Duration::from_secs(60))];
    assert!(recent.contains(&time[..16].to_string()), "a recent time: {time}");
    assert_eq!(time.len(), 27, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
    time.to_string()
}

/// Checks a `duration_ms` value (milliseconds with three decimals, under
/// 5 s) and returns it.
fn checked_duration(text: &str) -> String {
    let (whole, frac) = text.split_once('.').unwrap_or_else(|| panic!("ms.µs: {text}"));
    assert_eq!(frac.len(), 3, "{text}");
    assert!(whole.parse::<u64>().unwrap() < 5000, "{text}");
    text.to_string()
}

/// Checks a tunnel's close reason: after a Close each way, whichever side
/// then ended its TCP connection first (the server, usually).
fn checked_close(close: &str) -> String {
    assert!(["client closed", "server closed"].contains(&close), "{close}");
    close.to_string()
}

/// Checks a request id (16 hex digits) and returns it.
fn checked_id(id: &str) -> String {
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a request id: {id}"
    );
    id.to_string()
}

/// The value after `key=` in a text line.
fn text_value<'l>(line: &'l str, key: &str) -> &'l str {
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        + key.len()
        + 2;
    line[start..].split(' ').next().unwrap()
}

/// A request (`/exact?x=1`) and a WebSocket through a tether writing its
/// access log to a file in `format`; returns what the client saw and the
/// three lines (the request's, the handshake's, the tunnel's).
async fn one_of_each(tag: &str, format: &str) -> (Sent, std::net::SocketAddr, Vec<String>) {
    let dir = scratch(tag);
    let file = dir.join("access.log");
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().server(&s1))
        .access_log(file.to_str().unwrap())
        .log_format(format);
    let tether = start_tether(&config).await;
    let sent = request(tether.addr, "/exact?x=1&sid=secret").await;
    let lines = lines_of(&file, 1).await;
    let ws_client = tunnel(tether.addr).await;
    let mut lines = [lines, lines_of(&file, 3).await[1..].to_vec()].concat();
    lines.truncate(3);
    tether.stop().await;
    std::fs::remove_dir_all(&dir).ok();
    (sent, ws_client, lines)
}

#[tokio::test]
async fn text_lines_say_what_they_said_before_with_values_that_have_spaces_quoted() {
    let (sent, ws_client, lines) = one_of_each("text", "text").await;
    let [get, handshake, closed] = [&lines[0], &lines[1], &lines[2]];
    let time = checked_time(&get[..27]);
    let duration = checked_duration(text_value(get, "duration_ms"));
    let id = checked_id(text_value(get, "request_id"));
    assert_eq!(
        get,
        &format!(
            "{time}  INFO tether::access: kind=http protocol=http/1.1 request_id={id} client={client} \
             frontend=public backend=pool server=s1 method=GET uri=/exact?x=1&sid=REDACTED status=200 \
             bytes_in=0 bytes_out={len} duration_ms={duration} error=-",
            client = sent.client,
            len = sent.body_len,
        )
    );
    let id = checked_id(text_value(handshake, "request_id"));
    let (time, duration) = (
        checked_time(&handshake[..27]),
        checked_duration(text_value(handshake, "duration_ms")),
    );
    assert_eq!(
        handshake,
        &format!(
            "{time}  INFO tether::access: kind=http protocol=http/1.1 request_id={id} client={ws_client} \
             frontend=public backend=pool server=s1 method=GET uri=/ws status=101 bytes_in=0 bytes_out=0 \
             duration_ms={duration} error=-"
        )
    );
    let (time, duration) = (
        checked_time(&closed[..27]),
        checked_duration(text_value(closed, "duration_ms")),
    );
    let close = checked_close(closed.split("close=\"").nth(1).unwrap().trim_end_matches('"'));
    assert_eq!(
        closed,
        &format!(
            "{time}  INFO tether::access: kind=tunnel protocol=http/1.1 request_id={id} client={ws_client} \
             frontend=public backend=pool server=s1 bytes_in=19 bytes_out=15 messages_in=1 messages_out=2 \
             close_code_in=1000 close_code_out=1000 duration_ms={duration} close=\"{close}\""
        )
    );
}

#[tokio::test]
async fn json_lines_are_objects_with_the_same_names_and_types_as_before() {
    let (sent, ws_client, lines) = one_of_each("json", "json").await;
    let parsed: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let [get, handshake, closed] = [&parsed[0], &parsed[1], &parsed[2]];
    for line in &lines {
        let raw = line
            .split("\"duration_ms\":")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        checked_duration(raw);
    }
    let moment = |line: &serde_json::Value| {
        checked_time(line["timestamp"].as_str().unwrap());
        (line["timestamp"].clone(), line["duration_ms"].clone())
    };
    let (time, duration) = moment(get);
    let request_id = checked_id(get["request_id"].as_str().unwrap());
    assert_eq!(
        get,
        &serde_json::json!({
            "timestamp": time, "level": "INFO", "kind": "http", "protocol": "http/1.1",
            "request_id": request_id, "client": sent.client.to_string(), "frontend": "public",
            "backend": "pool", "server": "s1", "method": "GET", "uri": "/exact?x=1&sid=REDACTED",
            "status": 200, "bytes_in": 0, "bytes_out": sent.body_len, "duration_ms": duration,
            "error": "-", "target": "tether::access"
        })
    );
    let id = checked_id(handshake["request_id"].as_str().unwrap());
    let (time, duration) = moment(handshake);
    assert_eq!(
        handshake,
        &serde_json::json!({
            "timestamp": time, "level": "INFO", "kind": "http", "protocol": "http/1.1",
            "request_id": id, "client": ws_client.to_string(), "frontend": "public",
            "backend": "pool", "server": "s1", "method": "GET", "uri": "/ws",
            "status": 101, "bytes_in": 0, "bytes_out": 0, "duration_ms": duration,
            "error": "-", "target": "tether::access"
        })
    );
    let (time, duration) = moment(closed);
    let close = checked_close(closed["close"].as_str().unwrap());
    assert_eq!(
        closed,
        &serde_json::json!({
            "timestamp": time, "level": "INFO", "kind": "tunnel", "protocol": "http/1.1",
            "request_id": id, "client": ws_client.to_string(), "frontend": "public",
            "backend": "pool", "server": "s1", "bytes_in": 19, "bytes_out": 15,
            "messages_in": 1, "messages_out": 2, "close_code_in": 1000, "close_code_out": 1000,
            "duration_ms": duration, "close": close, "target": "tether::access"
        })
    );
    // The field order of today's lines, too.
    assert!(lines[0].starts_with("{\"timestamp\":"), "{}", lines[0]);
    assert!(
        lines[0].ends_with(",\"error\":\"-\",\"target\":\"tether::access\"}"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a_template_writes_its_fields_and_a_dash_for_what_a_line_does_not_have() {
    let template = "$client - [$time] \"$method $uri\" $status $bytes_in/$bytes_out $duration_ms \
                    $frontend $backend/$server $request_id $kind $protocol $messages_in/$messages_out \
                    $close_code_in/$close_code_out \"$close\" \"$error\" $$";
    let (sent, ws_client, lines) = one_of_each("template", template).await;
    let variable = |line: &str| {
        let time = checked_time(line.split('[').nth(1).unwrap().split(']').next().unwrap());
        let duration = checked_duration(line.split("\" ").nth(1).unwrap().split(' ').nth(2).unwrap());
        (time, duration)
    };
    let (time, duration) = variable(&lines[0]);
    let request_id = checked_id(lines[0].split(' ').nth(10).unwrap());
    assert_eq!(
        lines[0],
        format!(
            "{client} - [{time}] \"GET /exact?x=1&sid=REDACTED\" 200 0/{len} {duration} public pool/s1 {id} \
             http http/1.1 -/- -/- \"-\" \"-\" $",
            client = sent.client,
            len = sent.body_len,
            id = request_id,
        )
    );
    let id = checked_id(lines[1].split(' ').nth(10).unwrap());
    let (time, duration) = variable(&lines[1]);
    assert_eq!(
        lines[1],
        format!("{ws_client} - [{time}] \"GET /ws\" 101 0/0 {duration} public pool/s1 {id} http http/1.1 -/- -/- \"-\" \"-\" $")
    );
    let (time, duration) = variable(&lines[2]);
    let close = checked_close(lines[2].split(" \"").nth(2).unwrap().trim_end_matches('"'));
    assert_eq!(
        lines[2],
        format!(
            "{ws_client} - [{time}] \"- -\" - 19/15 {duration} public pool/s1 {id} tunnel http/1.1 1/2 \
             1000/1000 \"{close}\" \"-\" $"
        )
    );
}

#[tokio::test]
async fn access_off_writes_no_line_and_a_reload_turns_it_on_in_another_format() {
    let captured = access_lines();
    let dir = scratch("off");
    let file = dir.join("access.log");
    let s1 = backend("s1").start().await;
    let off = Config::over(pool().server(&s1)).access_log("off");
    let tether = start_tether(&off).await;
    request(tether.addr, "/while-off").await;
    tunnel(tether.addr).await;
    // A reload to a file, then a request: its line is there, the earlier ones nowhere.
    let on = Config::over(pool().server(&s1))
        .access_log(file.to_str().unwrap())
        .log_format("$uri $status");
    tether.handle.reload(&on.parse()).expect("reload");
    request(tether.addr, "/after-reload").await;
    assert_eq!(lines_of(&file, 1).await, ["/after-reload 200"]);
    assert!(tether::access_log::flush_all(Duration::from_secs(2)));
    let everything = captured.text();
    assert!(!everything.contains("/while-off"), "{everything}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "/after-reload 200\n");
    tether.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_file_is_appended_to_and_opened_again_on_reload_after_rotation() {
    let dir = scratch("file");
    let file = dir.join("access.log");
    std::fs::write(&file, "an earlier line\n").unwrap();
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().server(&s1))
        .access_log(file.to_str().unwrap())
        .log_format("$uri");
    let tether = start_tether(&config).await;
    request(tether.addr, "/first").await;
    assert_eq!(lines_of(&file, 2).await, ["an earlier line", "/first"]);
    // Rotation: the file is moved away, then tether told (a reload, as after SIGHUP).
    let rotated = dir.join("access.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    tether.handle.reload(&config.parse()).expect("reload");
    request(tether.addr, "/second").await;
    assert_eq!(lines_of(&file, 1).await, ["/second"]);
    // And on its own (SIGUSR1 in the binary).
    std::fs::rename(&file, dir.join("access.log.2")).unwrap();
    tether.handle.reopen_access_log();
    request(tether.addr, "/third").await;
    assert_eq!(lines_of(&file, 1).await, ["/third"]);
    assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "an earlier line\n/first\n");
    tether.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_stalls_costs_dropped_lines_not_latency() {
    let dir = scratch("fifo");
    let fifo = dir.join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // A reader that never reads: the pipe fills, then every write blocks.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(&fifo)
        .expect("open the FIFO for reading");
    let s1 = backend("s1").start().await;
    let config = Config::over(pool().server(&s1))
        .access_log(fifo.to_str().unwrap())
        .log_format("$uri $status")
        .admin(Admin::bind("127.0.0.1:0").hosts(&["tether.test"]));
    let tether = start_tether(&config).await;
    let admin = tether.handle.admin_addr().unwrap();
    assert_eq!(metric(admin, "tether_access_log_dropped_total").await, 0);
    // 64 KiB of pipe and about 1 MiB of queue: 2,000 lines of 1 KiB overflow both.
    let long = format!("/stalled/{}", "x".repeat(1000));
    let mut client = http_client(tether.addr).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..2000 {
        let started = std::time::Instant::now();
        let (status, _, _) = send(&mut client, get_request(&long)).await;
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
    }
    let dropped = metric(admin, "tether_access_log_dropped_total").await;
    assert!(dropped > 500, "lines dropped and counted: {dropped}");
    assert!(slowest < Duration::from_millis(500), "a request waited {slowest:?}");
    tether.stop().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// `O_NONBLOCK`, so opening the FIFO's reading end does not wait for a writer.
fn libc_nonblock() -> i32 {
    0o4000
}

use std::os::unix::fs::OpenOptionsExt;
