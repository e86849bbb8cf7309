//! The side effects of discovery: a hickory resolver (`[resolver]`, or the
//! nameservers of `/etc/resolv.conf`) and the loop that runs each job of
//! the configuration in force every `interval`, off the request path, and
//! hands the found sets to `apply` whenever one changed.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::naming::{named_address, srv_servers, SrvAnswer};
use super::{plan, Found, FoundSets, Job, Known, Outcome, Target};
use crate::config::model::{Config, Discover, Resolver};

/// The limit of a lookup without `[resolver]`.
const SYSTEM_TIMEOUT: Duration = Duration::from_secs(2);

/// A resolver for `settings`, or the system's; `Err` says why none could be made.
fn resolver(settings: Option<&Resolver>) -> Result<TokioResolver, String> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match settings {
        Some(settings) => {
            let mut config = ResolverConfig::new();
            for address in &settings.nameservers {
                config.add_name_server(NameServerConfig::new(*address, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*address, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        }
        None => TokioResolver::builder(provider)
            .map_err(|err| format!("cannot read the system's resolver configuration: {err}"))?,
    };
    let options = builder.options_mut();
    options.timeout = settings.map_or(SYSTEM_TIMEOUT, |s| s.timeout);
    options.attempts = 1;
    // Every A and AAAA record is a server.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // /etc/hosts is not DNS: a discovered set comes from the nameservers only.
    options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    Ok(builder.build())
}

/// The addresses of `name`, sorted; an error when there are none.
async fn ips(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    let answer = resolver.lookup_ip(name).await.map_err(|err| err.to_string())?;
    let mut ips: Vec<IpAddr> = answer.iter().collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// The servers one lookup of `job` finds (`current`: the named server's address now).
async fn look_up(resolver: &TokioResolver, job: &Job, current: Option<SocketAddr>) -> Result<Vec<Found>, String> {
    match &job.target {
        Target::Discover(Discover::Dns { name, port, .. }) => Ok(ips(resolver, name)
            .await?
            .into_iter()
            .map(|ip| Found {
                address: SocketAddr::new(ip, *port),
                weight: None,
            })
            .collect()),
        Target::Discover(Discover::Srv { name, .. }) => {
            let answer = resolver
                .srv_lookup(name.as_str())
                .await
                .map_err(|err| err.to_string())?;
            let mut records = Vec::new();
            for srv in answer.iter() {
                // A target without an address (yet) is left out, not the whole answer.
                let ips = ips(resolver, &srv.target().to_utf8()).await.unwrap_or_default();
                records.push(SrvAnswer {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    ips,
                });
            }
            Ok(srv_servers(&records))
        }
        Target::Named(named) => {
            let ips = ips(resolver, &named.host).await?;
            Ok(named_address(current, &ips, named.port)
                .map(|address| Found { address, weight: None })
                .into_iter()
                .collect())
        }
    }
}

/// What a job looks up, for logs.
fn looked_up(job: &Job) -> &str {
    match &job.target {
        Target::Discover(Discover::Dns { name, .. } | Discover::Srv { name, .. }) => name,
        Target::Named(named) => &named.host,
    }
}

/// Logs what an answer changed; returns whether the found sets changed.
fn log(job: &Job, outcome: &Outcome, kept: usize) -> bool {
    let (backend, name) = (job.backend.as_str(), looked_up(job));
    let list = |found: &[Found]| {
        found
            .iter()
            .map(|f| f.address.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match outcome {
        Outcome::Changed {
            added,
            removed,
            recovered,
        } => {
            if *recovered {
                tracing::info!(backend, name, "DNS lookup answers again");
            }
            tracing::info!(backend, name, added = %list(added), removed = %list(removed), "servers found in DNS changed");
            true
        }
        Outcome::Unchanged { recovered: true } => {
            tracing::info!(backend, name, "DNS lookup answers again (servers unchanged)");
            false
        }
        Outcome::Unchanged { recovered: false } => false,
        Outcome::Kept { reason, warn } => {
            if *warn {
                tracing::warn!(
                    backend,
                    name,
                    cause = %reason,
                    kept,
                    "DNS lookup failed or found nothing: keeping the last known servers (logged once until it answers again)"
                );
            }
            false
        }
    }
}

/// Runs the lookups of the configuration `config()` returns, each every
/// `interval` (the first at once), until dropped. `wake` is notified when
/// the configuration changed (a reload): jobs are planned again, new ones
/// looked up at once. Whenever a set changed, `apply` gets every job's last
/// known set.
pub async fn run(config: impl Fn() -> Arc<Config>, wake: Arc<Notify>, apply: impl Fn(FoundSets)) {
    let mut settings: Option<Option<Resolver>> = None;
    let mut client: Result<TokioResolver, String> = Err(String::new());
    // Every planned job, its last known set and when it is due.
    let mut jobs: Vec<(Job, Known, Instant)> = Vec::new();
    loop {
        let config = config();
        if settings.as_ref() != Some(&config.resolver) {
            client = resolver(config.resolver.as_ref());
            if let Err(err) = &client {
                tracing::error!(cause = %err, "no DNS resolver: discovered servers cannot be looked up");
            }
            settings = Some(config.resolver.clone());
        }
        // Jobs asking what they asked before keep their set (with the new
        // settings); the others are dropped, new ones looked up at once.
        let mut kept = Vec::with_capacity(jobs.len());
        for job in plan(&config) {
            match jobs.iter().position(|(old, _, _)| old.same_lookup(&job)) {
                Some(at) => {
                    let (_, known, due) = jobs.swap_remove(at);
                    kept.push((job, known, due));
                }
                None => kept.push((job, Known::default(), Instant::now())),
            }
        }
        // (What dropped jobs found no longer counts: `with_found` follows the file.)
        jobs = kept;
        let mut changed = false;
        if let Ok(client) = &client {
            // Each round asks the nameservers afresh (no cached answer hides a change).
            client.clear_cache();
        }
        let now = Instant::now();
        for (job, known, due) in jobs.iter_mut().filter(|(_, _, due)| *due <= now) {
            let current = known.set.as_ref().and_then(|s| s.iter().next()).map(|f| f.address);
            let answer = match &client {
                Ok(client) => {
                    let limit = config.resolver.as_ref().map_or(SYSTEM_TIMEOUT, |r| r.timeout);
                    match tokio::time::timeout(limit, look_up(client, job, current)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(format!("no answer within {limit:?}")),
                    }
                }
                Err(err) => Err(err.clone()),
            };
            let outcome = known.update(answer);
            changed |= log(job, &outcome, known.set.as_ref().map_or(0, BTreeSet::len));
            *due = Instant::now() + job.interval;
        }
        if changed {
            apply(
                jobs.iter()
                    .filter_map(|(job, known, _)| Some((job.clone(), known.set.clone()?)))
                    .collect(),
            );
        }
        let next = jobs.iter().map(|(_, _, due)| *due).min();
        match next {
            Some(next) => {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}
