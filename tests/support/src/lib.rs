//! Helpers for tether's integration tests (see DESIGN.md, "Tests"): real
//! backends that announce their name, a real tether on 127.0.0.1:0, small
//! HTTP/WebSocket clients, a typed config builder and timing helpers.
//!
//! A library crate of its own, so its public items are never dead code in
//! a test binary that happens not to use them.
#![warn(missing_docs)]

mod backend;
mod balancer;
mod browser;
mod cert;
mod clients;
mod config;
mod dns;
mod http;
mod instance;
mod logs;
mod node;
mod pebble;
mod redis_server;
mod relay;
mod sentinel;
mod timing;
mod ws;

pub use backend::{backend, loopback_backends, BackendBuilder, TestBackend};
pub use balancer::{find_balancer, BalancerKind, ExternalBalancer};
pub use browser::{
    browser_page_out, browser_scripts, chromium, chromium_or_skip, page_server, run_browser_script, run_chromium,
};
pub use cert::SelfSigned;
pub use clients::{Clients, Close};
pub use config::{
    pool, Admin, Backend, BackendTls, Cluster, Condition, Config, ConfigText, Frontend, FrontendTls, Health, Route,
    Server, Sticky, ToValue,
};
pub use dns::{Dnsmasq, SrvRecord};
pub use http::{
    admin_call, closed_port, connect_from, get, get_request, http_client, http_client_on, metric, raw_exchange, send,
    server_of, TestBody,
};
pub use instance::{start_tether, start_tether_on, RunningTether, TetherProcess};
pub use logs::{captured_access_lines, captured_logs, init_logs, quiet_access_log_unless_captured, Captured};
pub use node::ensure_npm_packages;
pub use pebble::{free_port, Pebble};
pub use redis_server::{PartitionProxy, RedisServer};
pub use relay::{Choose, Relay};
pub use sentinel::{sentinel_url, start_sentinels, RedisSentinel, MASTER_NAME};
pub use timing::eventually;
pub use ws::{
    close_code, close_frame, handshake_with_sid, next_text, ws_connect, ws_connect_with, ws_handshake_on, Handshake, Ws,
};
