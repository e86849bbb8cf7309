//! tether: a load balancer for WebSocket traffic.
//!
//! An HTTP/1.1 reverse proxy that upgrades WebSocket handshakes to tunnels,
//! routes by rules, balances by several algorithms and keeps clients on
//! their server. See `DESIGN.md` in the shared folder for the architecture.
//!
//! The modules form layers, each importing only from the layers below it
//! (README's Layout table; `tests/architecture.rs` checks it): `util`;
//! the leaves `access_log`, `cidr`, `origin`, `lookup`, `tls`, `uring`, `workers`, `ws`; `config`;
//! `state`, `discovery` and `dynamic`; `route` and `balance`; `sticky`; `health`; `snapshot`; the
//! engines `proxy` and `cluster`; `admin`; `instance`; `demo`, `import` and this root.

#![deny(unsafe_code)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod balance;
pub mod cidr;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod dynamic;
pub mod health;
pub mod import;
pub mod instance;
pub mod lookup;
pub mod origin;
pub mod proxy;
pub mod proxy_header;
pub mod rebalance;
pub mod route;
pub mod snapshot;
pub mod state;
pub mod sticky;
pub mod telemetry;
pub mod tls;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub mod uring;
pub mod util;
pub mod workers;
pub mod ws;

pub use instance::{Handle, StartError, Tether};
