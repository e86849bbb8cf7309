//! The instance's side of servers added and deleted through the admin API
//! (`dynamic` decides, this applies): every change goes through the reload
//! path (`swap_in`: build, diff, swap, apply), is kept in the state file
//! without a cluster, or shared through Redis with one. A deleted server
//! drains and leaves once it holds no connection (`start_deletions`).
//! Operator states set through the API are kept in the state file too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{AbortOnDrop, Handle, DRAIN_END_POLL};
use crate::cluster::servers::ServerSink;
use crate::config::Config;
use crate::dynamic::state_file::{self, OperatorState, StateFile, StateFileError, MAX_OPERATOR_STATES};
use crate::dynamic::{check_add, check_delete, left_out, ApiServers, Deletion, Entry, Phase, Refusal};
use crate::state::AdminState;
use crate::util::clock::unix_ms;
use crate::util::lock;

/// Servers added through the admin API and the operator states the state
/// file keeps. Changed only with the instance's reload lock held, so
/// changes, their snapshots and their writes to the file keep one order.
pub(super) struct ApiState {
    /// The servers added through the API (deleted ones kept a while as gone).
    pub(super) servers: Mutex<ApiServers>,
    /// The last operator change through the API of each `(backend, server)`,
    /// with a state file (without one, a reload resets them to the config's).
    operator: Mutex<BTreeMap<(String, String), OperatorState>>,
    /// The state file read at start; `None`: nothing is kept across
    /// restarts (but in a cluster's Redis).
    pub(super) state_file: Option<PathBuf>,
    /// Wakes the task that removes deleted servers once they are drained.
    deleting: Arc<Notify>,
}

impl ApiState {
    /// The state `config`'s `state_file` keeps (nothing without one, or
    /// before the file is first written); a file that cannot be used stops
    /// the start rather than be overwritten.
    pub(super) fn load(config: &Config) -> Result<ApiState, StateFileError> {
        let mut servers = ApiServers::default();
        let mut operator = BTreeMap::new();
        if let Some(path) = &config.state_file {
            if let Some(file) = state_file::read(path)? {
                let now = unix_ms();
                for server in file.servers {
                    servers.add(server, now);
                }
                for state in file.operator {
                    operator.insert((state.backend.clone(), state.server.clone()), state);
                }
                for (server, why) in left_out(&with_found_none(config), &servers) {
                    tracing::warn!(server = %server, cause = %why, "a server of the state file is left out");
                }
                tracing::info!(file = %path.display(), servers = servers.live_count(), operator_states = operator.len(),
                    "state file read");
            }
        }
        Ok(ApiState {
            servers: Mutex::new(servers),
            operator: Mutex::new(operator),
            state_file: config.state_file.clone(),
            deleting: Arc::default(),
        })
    }
}

/// `config` as it is before any DNS lookup answered.
fn with_found_none(config: &Config) -> Config {
    crate::discovery::with_found(config, &Vec::new())
}

impl Handle {
    /// The operator state the state file keeps for `backend`/`server`, if any.
    pub(super) fn stored_operator_state(&self, backend: &str, server: &str) -> Option<(AdminState, u32)> {
        let operator = lock(&self.inner.api.operator);
        let state = operator.get(&(backend.to_string(), server.to_string()))?;
        Some((state.admin, state.weight.min(crate::config::MAX_WEIGHT)))
    }

    /// Adds a server to `backend` from the JSON `body` of `POST
    /// /api/v1/backends/{backend}/servers`, asked by `user`: checked like the
    /// config against the servers in force, kept (state file or Redis), and
    /// applied through the reload path (it ramps up with `slowstart`).
    /// Returns its name, or the refusal with its HTTP class.
    pub fn add_server(&self, backend: &str, body: &[u8], user: &str) -> Result<String, Refusal> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let file = lock(&inner.discovery.file).clone();
        let found = lock(&inner.discovery.found).clone();
        let mut api = lock(&inner.api.servers).clone();
        let server = check_add(&self.compose(&file, &found, &api), &api, backend, body)?;
        let entry = api.add(server, unix_ms());
        self.commit(&file, &found, api, &entry, user)?;
        let server = &entry.server;
        tracing::info!(backend, server = %server.name, address = %server.address, weight = server.weight, user,
            "server added through the API");
        Ok(server.name.clone())
    }

    /// Deletes `backend`/`server` (only a server added through the API),
    /// asked by `user`: it drains as a server removed by a reload does, and
    /// leaves once it holds no connection. Deleting one already being
    /// deleted changes nothing.
    pub fn delete_server(&self, backend: &str, server: &str, user: &str) -> Result<(), Refusal> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let file = lock(&inner.discovery.file).clone();
        let found = lock(&inner.discovery.found).clone();
        let mut api = lock(&inner.api.servers).clone();
        if check_delete(&self.compose(&file, &found, &api), &api, backend, server)? == Deletion::AlreadyDeleting {
            return Ok(());
        }
        let Some(entry) = api.delete(backend, server, unix_ms()) else {
            return Ok(());
        };
        self.commit(&file, &found, api, &entry, user)?;
        inner.api.deleting.notify_one();
        tracing::info!(backend, server, user, "server deleted through the API: draining");
        Ok(())
    }

    /// Keeps `api` (state file), applies it through the reload path, then
    /// shares `entry` (the change just made by `user`) with the cluster. The
    /// reload lock is held; nothing changed if it fails.
    fn commit(
        &self,
        file: &Config,
        found: &crate::discovery::FoundSets,
        api: ApiServers,
        entry: &Entry,
        user: &str,
    ) -> Result<(), Refusal> {
        let inner = &self.inner;
        self.save_state(&api)
            .map_err(|err| Refusal::failed(format!("nothing changed: {err}")))?;
        self.swap_in(&self.compose(file, found, &api), true)
            .map_err(|err| Refusal::failed(format!("nothing changed: {err}")))?;
        *lock(&inner.api.servers) = api;
        if let Some(cluster) = inner.cluster.get() {
            cluster.share_server(entry, user);
        }
        Ok(())
    }

    /// Servers added or deleted through another instance (read from Redis):
    /// those newer than what is known are applied through the reload path.
    fn apply_api_entries(&self, entries: Vec<Entry>) {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let mut api = lock(&inner.api.servers).clone();
        let mut changed = Vec::new();
        for entry in entries {
            let name = format!("{}/{}", entry.server.backend, entry.server.name);
            if api.merge(entry) {
                changed.push(name);
            }
        }
        if changed.is_empty() {
            return;
        }
        api.prune(unix_ms());
        let file = lock(&inner.discovery.file).clone();
        let found = lock(&inner.discovery.found).clone();
        match self.swap_in(&self.compose(&file, &found, &api), true) {
            Ok(()) => {
                *lock(&inner.api.servers) = api;
                inner.api.deleting.notify_one();
                tracing::info!(servers = %changed.join(" "), "servers added or deleted through the cluster applied");
            }
            Err(err) => tracing::error!(cause = %err, "servers from the cluster could not be applied"),
        }
    }

    /// Where the cluster hands the servers other instances add or delete.
    /// It holds the instance weakly: the cluster's tasks never keep a
    /// stopped instance alive.
    pub(super) fn server_sink(&self) -> ServerSink {
        let instance = Arc::downgrade(&self.inner);
        Arc::new(move |entries| {
            if let Some(inner) = instance.upgrade() {
                Handle { inner }.apply_api_entries(entries);
            }
        })
    }

    /// The task that removes servers deleted through the API once their
    /// drain ended (they hold no connection), until it is dropped.
    pub(super) fn start_deletions(&self) -> AbortOnDrop {
        let handle = self.clone();
        let wake = self.inner.api.deleting.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if handle.finish_deletions() {
                    tokio::time::sleep(DRAIN_END_POLL).await;
                } else {
                    wake.notified().await;
                }
            }
        }))
    }

    /// Removes the servers being deleted whose drain ended, through the
    /// reload path; returns whether some are still draining.
    fn finish_deletions(&self) -> bool {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.reloading);
        let snapshot = self.snapshot();
        let mut api = lock(&inner.api.servers).clone();
        let deleting: Vec<(String, String)> = api
            .live()
            .filter(|e| e.phase == Phase::Deleting)
            .map(|e| (e.server.backend.clone(), e.server.name.clone()))
            .collect();
        let mut left = Vec::new();
        for (backend, name) in &deleting {
            let server = snapshot
                .backend(backend)
                .and_then(|b| b.server_index.get(name.as_str()).map(|&i| &b.servers[i]))
                .filter(|s| s.leaving);
            let drained = server.is_none_or(|s| {
                s.state.active() == 0 && s.state.drain_progress().is_some_and(|p| p.ended_unix_ms.is_some())
            });
            if drained && api.finish(backend, name) {
                left.push(format!("{backend}/{name}"));
                lock(&inner.api.operator).remove(&(backend.clone(), name.clone()));
            }
        }
        if left.is_empty() {
            return !deleting.is_empty();
        }
        api.prune(unix_ms());
        if let Err(err) = self.save_state(&api) {
            tracing::error!(cause = %err, "the state file could not be written");
        }
        let file = lock(&inner.discovery.file).clone();
        let found = lock(&inner.discovery.found).clone();
        match self.swap_in(&self.compose(&file, &found, &api), true) {
            Ok(()) => tracing::info!(servers = %left.join(" "), "servers deleted through the API are drained and gone"),
            Err(err) => tracing::error!(cause = %err, "drained servers could not be removed"),
        }
        let still = deleting.len() > left.len();
        *lock(&inner.api.servers) = api;
        still
    }

    /// Keeps the operator state of `backend`/`server` just changed through
    /// the API (admin state and weight) in the state file, if there is one.
    pub fn remember_operator_state(&self, backend: &str, server: &str) {
        let inner = &self.inner;
        if inner.api.state_file.is_none() {
            return;
        }
        let _one_at_a_time = lock(&inner.reloading);
        let snapshot = self.snapshot();
        let Some(live) = snapshot
            .backend(backend)
            .and_then(|b| b.server_index.get(server).map(|&i| &b.servers[i]))
            .filter(|s| !s.leaving)
        else {
            return;
        };
        {
            let mut operator = lock(&inner.api.operator);
            operator.insert(
                (backend.to_string(), server.to_string()),
                OperatorState {
                    backend: backend.to_string(),
                    server: server.to_string(),
                    admin: live.state.admin(),
                    weight: live.state.weight(),
                    at_unix_ms: unix_ms(),
                },
            );
            while operator.len() > MAX_OPERATOR_STATES {
                let oldest = operator
                    .iter()
                    .min_by_key(|(_, s)| s.at_unix_ms)
                    .map(|(key, _)| key.clone());
                match oldest {
                    Some(key) => operator.remove(&key),
                    None => break,
                };
            }
        }
        let api = lock(&inner.api.servers).clone();
        if let Err(err) = self.save_state(&api) {
            tracing::error!(cause = %err, "operator state not kept: the state file could not be written");
        }
    }

    /// Writes the state file (if there is one) with the active servers of
    /// `api` and the operator states.
    fn save_state(&self, api: &ApiServers) -> Result<(), StateFileError> {
        let Some(path) = &self.inner.api.state_file else {
            return Ok(());
        };
        let file = StateFile {
            version: state_file::VERSION,
            servers: api
                .live()
                .filter(|e| e.phase == Phase::Active)
                .map(|e| e.server.clone())
                .collect(),
            operator: lock(&self.inner.api.operator).values().cloned().collect(),
        };
        state_file::write(path, &file)
    }
}
