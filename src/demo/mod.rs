//! `tether demo`: in-process WebSocket echo servers behind a `leastconn`
//! balancer with sticky cookies and health checks, simulated users that
//! connect through it, tether's admin listener (stats page and API), and a
//! demo page of its own that draws the connections per server live and has
//! buttons to add, kill, drain and bring back a server. Failover, draining
//! and rebalancing, visible in a browser in ten seconds.

mod clients;
mod control;
mod echo;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, Config, ConfigError};
use crate::instance::{StartError, Tether};

pub use clients::Behaviour;
pub use echo::{announce_and_echo, start_echo_server, start_echo_server_on, start_killable, Kill};

/// Names of the demo's first servers.
pub const SERVER_NAMES: [&str; 3] = ["echo-1", "echo-2", "echo-3"];

/// The demo's backend.
pub const BACKEND: &str = "echo";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An echo server could not bind a port.
    #[error("cannot start a demo echo server: {0}")]
    Backend(#[source] std::io::Error),
    /// The demo page's address could not be bound.
    #[error("cannot listen on {address} for the demo page: {source} (try `tether demo --page 127.0.0.1:8091`)")]
    Page {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The generated configuration was refused (a bug).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The balancer could not bind its address.
    #[error("{0} (is another program on that port? try `tether demo --listen 127.0.0.1:8081 --admin 127.0.0.1:9001`)")]
    Start(#[from] StartError),
}

/// Where the demo listens and how its parts behave.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// tether's frontend (the simulated users and a browser connect here).
    pub listen: SocketAddr,
    /// tether's admin listener: stats page, `/metrics`, API.
    pub admin: SocketAddr,
    /// The demo page with its buttons.
    pub page: SocketAddr,
    /// The simulated users.
    pub users: Behaviour,
    /// Time between two health checks of a server.
    pub check_interval: Duration,
    /// The backend's `drain_timeout`: how long a drained server's tunnels stay.
    pub drain_timeout: Duration,
    /// The backend's `drain_spread` and `down_spread`: over how long closes are spread.
    pub spread: Duration,
}

impl DemoOptions {
    /// The defaults of `tether demo`, with its three addresses: 90 users
    /// staying 10–40 s each; checks every 500 ms; drains close after 2 s,
    /// spread over 2 s.
    pub fn new(listen: SocketAddr, admin: SocketAddr, page: SocketAddr) -> Self {
        Self {
            listen,
            admin,
            page,
            users: Behaviour {
                count: 90,
                stay_min: Duration::from_secs(10),
                stay_max: Duration::from_secs(40),
                message_every: Duration::from_secs(5),
            },
            check_interval: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(2),
            spread: Duration::from_secs(2),
        }
    }
}

/// The demo's configuration: the admin listener, one frontend on `listen`,
/// `leastconn` with a sticky cookie and WebSocket health checks over `servers`.
pub fn demo_config(options: &DemoOptions, servers: &[(&str, SocketAddr)]) -> Result<Config, ConfigError> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut text = format!(
        "[admin]\nbind = \"{admin}\"\n\n\
         [[frontend]]\nname = \"demo\"\nbind = [\"{listen}\"]\ndefault_backend = \"{BACKEND}\"\n\n\
         [[backend]]\nname = \"{BACKEND}\"\nbalance = \"leastconn\"\n\
         sticky = {{ cookie = \"SERVERID\", mode = \"insert\" }}\n\
         health = {{ check = \"websocket\", path = \"/ws\", interval = \"{interval}\", rise = 1, fall = 1, observe = true }}\n\
         drain_timeout = \"{drain}\"\ndrain_spread = \"{spread}\"\ndown_spread = \"{spread}\"\n\
         rebalance = {{ max_skew = 1.2, rate = \"10/s\", settle = \"3s\" }}\n",
        admin = options.admin,
        listen = options.listen,
        interval = ms(options.check_interval),
        drain = ms(options.drain_timeout),
        spread = ms(options.spread),
    );
    for (name, address) in servers {
        text.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{address}\"\n"
        ));
    }
    config::parse(&text, "<demo>")
}

/// A demo ready to run: echo servers started, tether and the demo page bound.
pub struct Demo {
    tether: Tether,
    page: TcpListener,
    options: DemoOptions,
    servers: Vec<(String, SocketAddr, Kill)>,
}

impl Demo {
    /// Starts the echo servers and binds tether and the demo page.
    pub async fn prepare(options: DemoOptions) -> Result<Demo, DemoError> {
        let mut servers = Vec::new();
        for name in SERVER_NAMES {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            let (address, kill) = start_killable(any, Arc::from(name)).await.map_err(DemoError::Backend)?;
            servers.push((name.to_string(), address, kill));
        }
        let written: Vec<(&str, SocketAddr)> = servers.iter().map(|(n, a, _)| (n.as_str(), *a)).collect();
        let config = demo_config(&options, &written)?;
        let page = TcpListener::bind(options.page)
            .await
            .map_err(|source| DemoError::Page {
                address: options.page,
                source,
            })?;
        let tether = Tether::bind(&config)?;
        Ok(Demo {
            tether,
            page,
            options,
            servers,
        })
    }

    /// tether's frontend address.
    pub fn frontend(&self) -> SocketAddr {
        self.tether
            .local_addrs("demo")
            .first()
            .copied()
            .unwrap_or(self.options.listen)
    }

    /// tether's admin address (stats page and API).
    pub fn admin(&self) -> SocketAddr {
        self.tether.admin_addr().unwrap_or(self.options.admin)
    }

    /// The demo page's address.
    pub fn page(&self) -> SocketAddr {
        self.page.local_addr().unwrap_or(self.options.page)
    }

    /// Serves until `shutdown` resolves: tether, the simulated users, the
    /// demo page. The users stop first, then tether stops gracefully.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let frontend = self.frontend();
        let admin = self.admin();
        let (stop_users, users_stop) = watch::channel(false);
        let counts = clients::start(frontend, self.options.users.clone(), users_stop);
        let control = Arc::new(control::Control::new(
            admin,
            BACKEND,
            self.servers,
            counts,
            self.options.users.count,
        ));
        let page = tokio::spawn(control.serve(self.page));
        self.tether
            .run(async move {
                shutdown.await;
                let _ = stop_users.send(true);
            })
            .await;
        page.abort();
        // Dropping the control (with the page task) kills the echo servers.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid_and_checks_its_servers() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let servers = [("echo-1", "127.0.0.1:1".parse().unwrap())];
        let config = demo_config(&DemoOptions::new(any, any, any), &servers).expect("valid");
        assert_eq!(config.backends[0].servers.len(), 1);
        assert!(
            config.backends[0].health.is_some(),
            "kill shows failover only with health checks"
        );
        assert!(config.admin.is_some(), "the demo page reads tether's admin API");
        assert!(
            config.backends[0].rebalance.is_some(),
            "an added server gets its share of long-lived users"
        );
    }
}
