//! Servers found in DNS: `discover = { dns = … }` / `{ srv = … }` on a
//! backend, and written servers whose host name is looked up again every
//! `resolve_interval`.
//!
//! The decisions are pure and live here and in `naming`: which lookups a
//! configuration asks for (`plan`), what a lookup's answer changes
//! (`Known::update`: a failed or empty answer keeps the last known set), a
//! discovered server's name and cookie id (from its address, so every
//! instance agrees without talking), and the configuration the snapshot is
//! built from (`with_found`: the file's servers plus the found ones). The
//! side effects (the resolver, the lookup loop) are in `dns`; `instance`
//! wires them, rebuilding the snapshot through the reload path when a set
//! changes.

pub mod dns;
pub mod naming;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::model::{Backend, Config, Discover, NamedServer, Server};
use crate::config::types::{AdminState, ServerSource};

/// One server an answer names: its address and, from an SRV record, its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Found {
    /// Where to connect.
    pub address: SocketAddr,
    /// The SRV record's weight (mapped by [`naming::srv_weight`]); `server_defaults` when `None`.
    pub weight: Option<u32>,
}

/// What one lookup is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A backend's `discover`: every answer is a server.
    Discover(Discover),
    /// A written server's host name (`resolve_interval`): one address is kept.
    Named(NamedServer),
}

/// One lookup a configuration asks for, repeated every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The backend it fills.
    pub backend: String,
    /// What is looked up.
    pub target: Target,
    /// Time between lookups.
    pub interval: Duration,
}

impl Job {
    /// Whether `other` asks the same question for the same server(s): same
    /// backend and name looked up (and port, and named server), whatever
    /// the interval or the named server's other settings. A reload that
    /// changes only those keeps the servers found (no drain, no re-add).
    pub fn same_lookup(&self, other: &Job) -> bool {
        self.backend == other.backend
            && match (&self.target, &other.target) {
                (
                    Target::Discover(Discover::Dns { name, port, .. }),
                    Target::Discover(Discover::Dns { name: n, port: p, .. }),
                ) => name == n && port == p,
                (Target::Discover(Discover::Srv { name, .. }), Target::Discover(Discover::Srv { name: n, .. })) => {
                    name == n
                }
                (Target::Named(a), Target::Named(b)) => a.name == b.name && a.host == b.host && a.port == b.port,
                _ => false,
            }
    }
}

/// The lookups of `config`: each backend's `discover`, then each of its
/// named servers with `resolve_interval`.
pub fn plan(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    for backend in &config.backends {
        if let Some(discover) = &backend.discover {
            jobs.push(Job {
                backend: backend.name.clone(),
                target: Target::Discover(discover.clone()),
                interval: discover.interval(),
            });
        }
        if let Some(interval) = backend.resolve_interval {
            jobs.extend(backend.named_servers.iter().map(|named| Job {
                backend: backend.name.clone(),
                target: Target::Named(named.clone()),
                interval,
            }));
        }
    }
    jobs
}

/// The last known answer of each job (only jobs that answered once).
pub type FoundSets = Vec<(Job, BTreeSet<Found>)>;

/// What a lookup's answer means for the last known set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new set: these servers joined, these left.
    Changed {
        /// In the answer, not in the last set.
        added: Vec<Found>,
        /// In the last set, not in the answer (they are drained).
        removed: Vec<Found>,
        /// The lookups before this one had failed.
        recovered: bool,
    },
    /// The same set as before.
    Unchanged {
        /// The lookups before this one had failed.
        recovered: bool,
    },
    /// No usable answer (an error, or no record): the last set stays.
    Kept {
        /// Why.
        reason: String,
        /// The first failure in a row: log it (once, not at every lookup).
        warn: bool,
    },
}

/// The last known set of one job and whether its lookups are failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// The last non-empty answer; `None` before the first one.
    pub set: Option<BTreeSet<Found>>,
    /// Whether the last lookup failed or was empty.
    pub failing: bool,
}

impl Known {
    /// Takes a lookup's `answer` (the servers, or why there are none): a
    /// non-empty one replaces the set; an error or an empty one keeps it,
    /// so a DNS blink never empties a backend.
    pub fn update(&mut self, answer: Result<Vec<Found>, String>) -> Outcome {
        let answer = answer.and_then(|found| {
            if found.is_empty() {
                Err("the answer has no record".to_string())
            } else {
                Ok(found.into_iter().collect::<BTreeSet<Found>>())
            }
        });
        let was_failing = std::mem::replace(&mut self.failing, answer.is_err());
        let recovered = was_failing;
        match answer {
            Err(reason) => Outcome::Kept {
                reason,
                warn: !was_failing,
            },
            Ok(set) => {
                let before = self.set.take().unwrap_or_default();
                let added: Vec<Found> = set.difference(&before).copied().collect();
                let removed: Vec<Found> = before.difference(&set).copied().collect();
                self.set = Some(set);
                if added.is_empty() && removed.is_empty() {
                    Outcome::Unchanged { recovered }
                } else {
                    Outcome::Changed {
                        added,
                        removed,
                        recovered,
                    }
                }
            }
        }
    }
}

/// The configuration the snapshot is built from: `file`'s, with each
/// backend's found servers added after its written ones. Only answers of
/// jobs `file` still asks for count (a reload that changed `discover`
/// drops the old name's servers); a found server named like a written one
/// is left out.
pub fn with_found(file: &Config, found: &FoundSets) -> Config {
    let mut config = file.clone();
    let jobs = plan(file);
    for backend in &mut config.backends {
        for job in jobs.iter().filter(|j| j.backend == backend.name) {
            // The file's job (its current settings), with the set its lookup found.
            let Some((_, set)) = found.iter().find(|(old, _)| old.same_lookup(job)) else {
                continue;
            };
            for server in servers_of(backend, &job.target, set) {
                if !backend.servers.iter().any(|s| s.name == server.name) {
                    backend.servers.push(server);
                }
            }
        }
    }
    config
}

/// The servers `set` gives `backend` for `target`.
fn servers_of(backend: &Backend, target: &Target, set: &BTreeSet<Found>) -> Vec<Server> {
    match target {
        Target::Discover(_) => set
            .iter()
            .map(|found| Server {
                name: naming::server_name(&backend.name, found.address),
                address: found.address,
                weight: found.weight.unwrap_or(backend.server_defaults.weight),
                maxconn: backend.server_defaults.maxconn,
                cookie: Some(naming::cookie_id(found.address)),
                state: AdminState::Ready,
                tls: None,
                source: ServerSource::Dns,
                leaving: false,
                send_proxy: backend.send_proxy,
            })
            .collect(),
        Target::Named(named) => set
            .iter()
            .next()
            .map(|found| Server {
                name: named.name.clone(),
                address: found.address,
                weight: named.weight,
                maxconn: named.maxconn,
                cookie: named.cookie.clone(),
                state: named.state,
                tls: None,
                // Written in the file: only its address comes from DNS.
                source: ServerSource::Config,
                leaving: false,
                send_proxy: named.send_proxy,
            })
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Found {
        Found {
            address: text.parse().unwrap(),
            weight: None,
        }
    }

    #[test]
    fn a_new_answer_says_who_joined_and_who_left() {
        let mut known = Known::default();
        let first = known.update(Ok(vec![found("10.0.0.1:80"), found("10.0.0.2:80")]));
        assert_eq!(
            first,
            Outcome::Changed {
                added: vec![found("10.0.0.1:80"), found("10.0.0.2:80")],
                removed: vec![],
                recovered: false
            }
        );
        let second = known.update(Ok(vec![found("10.0.0.3:80"), found("10.0.0.2:80")]));
        assert_eq!(
            second,
            Outcome::Changed {
                added: vec![found("10.0.0.3:80")],
                removed: vec![found("10.0.0.1:80")],
                recovered: false
            }
        );
        let same = known.update(Ok(vec![found("10.0.0.2:80"), found("10.0.0.3:80")]));
        assert_eq!(same, Outcome::Unchanged { recovered: false });
    }

    #[test]
    fn a_failed_or_empty_answer_keeps_the_set_and_warns_once() {
        let mut known = Known::default();
        known.update(Ok(vec![found("10.0.0.1:80")]));
        let kept = known.update(Err("timed out".into()));
        assert_eq!(
            kept,
            Outcome::Kept {
                reason: "timed out".into(),
                warn: true
            }
        );
        assert!(matches!(known.update(Ok(vec![])), Outcome::Kept { warn: false, .. }));
        assert!(matches!(
            known.update(Err("x".into())),
            Outcome::Kept { warn: false, .. }
        ));
        assert_eq!(known.set.as_ref().map(BTreeSet::len), Some(1), "never emptied");
        assert_eq!(
            known.update(Ok(vec![found("10.0.0.1:80")])),
            Outcome::Unchanged { recovered: true }
        );
        assert!(
            matches!(known.update(Ok(vec![])), Outcome::Kept { warn: true, .. }),
            "warns again after recovering"
        );
    }

    const TEXT: &str = r#"
[[frontend]]
name = "public"
bind = ["127.0.0.1:0"]
default_backend = "ws"

[[backend]]
name = "ws"
discover = { dns = "ws.internal", port = 8200, interval = "1s" }
server_defaults = { maxconn = 10, weight = 3 }
resolve_interval = "2s"
[[backend.server]]
name = "fixed"
address = "127.0.0.9:8200"
[[backend.server]]
name = "named"
address = "ws1.internal:8300"
weight = 2
"#;

    #[test]
    fn found_servers_join_the_files_with_stable_names() {
        let file = crate::config::parse(TEXT, "test.toml").expect("valid");
        let jobs = plan(&file);
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].interval, Duration::from_secs(1));
        assert_eq!(jobs[1].interval, Duration::from_secs(2));
        assert_eq!(
            file.backends[0].servers.len(),
            1,
            "the named server waits for its lookup"
        );
        let found: FoundSets = vec![
            (jobs[0].clone(), [found("10.0.0.5:8200")].into_iter().collect()),
            (jobs[1].clone(), [found("10.0.0.7:8300")].into_iter().collect()),
        ];
        let config = with_found(&file, &found);
        let servers: Vec<(&str, String, u32, Option<u32>)> = config.backends[0]
            .servers
            .iter()
            .map(|s| (s.name.as_str(), s.address.to_string(), s.weight, s.maxconn))
            .collect();
        assert_eq!(
            servers,
            vec![
                ("fixed", "127.0.0.9:8200".to_string(), 1, None),
                ("ws-10.0.0.5-8200", "10.0.0.5:8200".to_string(), 3, Some(10)),
                ("named", "10.0.0.7:8300".to_string(), 2, None),
            ]
        );
        let cookie = config.backends[0].servers[1].cookie.clone();
        assert_eq!(cookie, Some(naming::cookie_id("10.0.0.5:8200".parse().unwrap())));
        // A new interval or weight keeps what was found, with the file's settings.
        let reweighted = crate::config::parse(
            &TEXT
                .replace("interval = \"1s\"", "interval = \"3s\"")
                .replace("weight = 2", "weight = 4"),
            "t.toml",
        )
        .unwrap();
        let weights: Vec<u32> = with_found(&reweighted, &found).backends[0]
            .servers
            .iter()
            .map(|s| s.weight)
            .collect();
        assert_eq!(weights, vec![1, 3, 4]);
        // A job the file no longer asks for adds nothing.
        let other = crate::config::parse(&TEXT.replace("ws.internal\"", "other.internal\""), "t.toml").unwrap();
        assert_eq!(with_found(&other, &found).backends[0].servers.len(), 2);
    }
}
