//! Stickiness, a layer before the balancing algorithm: a client that already
//! has a server (by cookie or by a learned session id) goes back to it.
//!
//! - `cookie`: tether's cookie naming the server, or the server's own session
//!   cookie prefixed with the server id, plain or opaque (HMAC).
//! - `table`: session ids learned from servers' responses, matched in later
//!   requests' cookies, URL parameters or headers.
//! - `engineio`: the Socket.IO handshake, whose `sid` is learned from its body.

pub mod cookie;
pub mod engineio;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;

use http::header::SET_COOKIE;
use http::{HeaderMap, HeaderName, Request};

use crate::balance::ServerId;
use crate::config::model::Sticky;
use crate::config::types::MatchSource;
use crate::lookup;
use cookie::{CookieState, CookieSticky};
use engineio::SidSniffer;
use table::{MemoryTable, StickHold, StickTable, MAX_KEY_LEN};

/// Where a request may carry a learned session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchKey {
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    UrlParam(String),
    /// A header.
    Header(HeaderName),
}

impl MatchKey {
    fn extract<'a, B>(&self, request: &'a Request<B>) -> Option<&'a str> {
        let value = match self {
            MatchKey::Cookie(name) => lookup::cookie(request.headers(), name)?,
            MatchKey::UrlParam(name) => lookup::query_param(request.uri(), name)?,
            MatchKey::Header(name) => request.headers().get(name)?.to_str().ok()?.trim(),
        };
        (!value.is_empty() && value.len() <= MAX_KEY_LEN).then_some(value)
    }
}

/// The stickiness of one backend, built from its `sticky` settings.
pub struct StickyPolicy {
    /// Cookie stickiness, if configured.
    pub cookie: Option<CookieSticky>,
    /// Learn ids from this response cookie.
    learn_cookie: Option<String>,
    /// Learn ids from this response header.
    learn_header: Option<HeaderName>,
    /// Where requests carry learned ids, tried in order.
    matches: Vec<MatchKey>,
    /// Learn the `sid` of Engine.IO handshake responses.
    engine_io: bool,
    /// Learned ids; carried across reloads with the backend.
    pub table: Option<Arc<dyn StickTable>>,
    /// A stuck client whose server is unavailable goes elsewhere (else 503).
    pub redispatch: bool,
    /// How stuck clients count against `maxconn`.
    pub stuck_maxconn: StuckMaxconn,
    /// A learned id unused for this long is forgotten (also the TTL of a shared table's entries).
    pub idle_timeout: std::time::Duration,
}

/// How clients stuck to a server count against its `maxconn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StuckMaxconn {
    /// Refused at `maxconn` like anyone (`sticky_respects_maxconn = true`).
    Respected,
    /// Let in past `maxconn` by at most this percent of it; beyond, balanced
    /// elsewhere and stuck there. HAProxy lets persistent clients past
    /// `maxconn` without bound; the cap keeps a replayed or guessed cookie
    /// from piling clients onto one server.
    Margin(u32),
}

impl StuckMaxconn {
    /// From the backend's `sticky_respects_maxconn` and `sticky_maxconn_margin`.
    pub fn of(respects: bool, margin_percent: u32) -> Self {
        if respects {
            Self::Respected
        } else {
            Self::Margin(margin_percent)
        }
    }

    /// The number of active connections a stuck client may join on a server
    /// with `maxconn` (`None`: no limit). The margin rounds up, so a server
    /// with a `maxconn` takes at least one stuck client past it.
    pub fn limit(self, maxconn: Option<u32>) -> Option<u32> {
        let maxconn = maxconn?;
        Some(match self {
            Self::Respected => maxconn,
            Self::Margin(percent) => {
                let extra = (u64::from(maxconn) * u64::from(percent)).div_ceil(100);
                u32::try_from(u64::from(maxconn) + extra).unwrap_or(u32::MAX)
            }
        })
    }
}

/// What stickiness says about one request.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The server the client is stuck to, if any.
    pub target: Option<ServerId>,
    /// What the stickiness cookie said.
    pub cookie: Option<CookieState>,
    /// Session ids the request carried that the table knows, with the server each names.
    pub known_ids: Vec<(String, ServerId)>,
    /// The server the table named for them.
    pub table_target: Option<ServerId>,
    /// The request opens an Engine.IO session whose `sid` is to be learned.
    pub engine_io_handshake: bool,
}

impl StickyPolicy {
    /// Builds the policy for `servers` (name, cookie id) in `ServerId` order,
    /// reusing `previous_table` (from before a reload) when there is one.
    pub fn build(
        config: &Sticky,
        servers: &[(&str, Option<&str>)],
        previous_table: Option<Arc<dyn StickTable>>,
        redispatch: bool,
        stuck_maxconn: StuckMaxconn,
    ) -> Self {
        let cookie = config.cookie.as_ref().map(|c| CookieSticky::new(c, servers));
        let learn_cookie = config.learn_cookie.clone();
        let learn_header = config.learn_header.clone();
        let matches: Vec<MatchKey> = config
            .matches
            .iter()
            .map(|m| match m {
                MatchSource::Cookie(c) => MatchKey::Cookie(c.clone()),
                MatchSource::UrlParam(p) => MatchKey::UrlParam(p.clone()),
                MatchSource::Header(h) => MatchKey::Header(h.clone()),
            })
            .collect();
        let engine_io = config.engine_io;
        let table = (!matches.is_empty()).then(|| {
            previous_table.unwrap_or_else(|| {
                Arc::new(MemoryTable::new(config.idle_timeout, config.max_entries)) as Arc<dyn StickTable>
            })
        });
        Self {
            cookie,
            learn_cookie,
            learn_header,
            matches,
            engine_io,
            table,
            redispatch,
            stuck_maxconn,
            idle_timeout: config.idle_timeout,
        }
    }

    /// With a shared table: looks up in the shared store the session ids
    /// `request` carries that the local table does not know (bounded by a
    /// short timeout), so that `lookup` finds them. Costs nothing otherwise.
    pub async fn fetch_shared<B>(&self, request: &Request<B>) {
        let Some(table) = self.table.as_ref().filter(|t| t.is_shared()) else {
            return;
        };
        let keys: Vec<String> = self
            .matches
            .iter()
            .filter_map(|key| key.extract(request))
            .map(str::to_string)
            .collect();
        if keys.is_empty() {
            return;
        }
        if let Some(fetch) = table.fetch(keys) {
            fetch.await;
        }
    }

    /// Finds the server `request` is stuck to: its cookie first, then the
    /// session ids the table knows. `servers` maps names to ids.
    pub fn lookup<B>(&self, request: &Request<B>, servers: &HashMap<Arc<str>, ServerId>) -> Lookup {
        let mut found = Lookup::default();
        if let Some(cookie) = &self.cookie {
            let state = cookie.state(request.headers());
            found.target = state.server();
            found.cookie = Some(state);
        }
        if let Some(table) = &self.table {
            for key in &self.matches {
                let Some(id) = key.extract(request) else { continue };
                let Some(name) = table.get(id) else { continue };
                if let Some(server) = servers.get(&name) {
                    found.table_target.get_or_insert(*server);
                    found.known_ids.push((id.to_string(), *server));
                }
            }
            found.target = found.target.or(found.table_target);
            found.engine_io_handshake = self.engine_io && engineio::is_handshake(request);
        }
        found
    }

    /// Rewrites the request's cookies before it goes to the server.
    pub fn rewrite_request(&self, headers: &mut HeaderMap) {
        if let Some(cookie) = &self.cookie {
            cookie.rewrite_request(headers);
        }
    }

    /// Applies stickiness to the response of `server`: sets or rewrites the
    /// cookie, re-sticks ids that pointed elsewhere (after a redispatch),
    /// learns ids the server handed out. Returns a learner for the body of an
    /// Engine.IO handshake.
    pub fn on_response(
        &self,
        headers: &mut HeaderMap,
        server: ServerId,
        server_name: &Arc<str>,
        lookup: &Lookup,
        https: bool,
    ) -> Option<SidLearner> {
        let table = self.respond(headers, server, server_name, lookup, https, &mut Vec::new())?;
        lookup.engine_io_handshake.then(|| SidLearner {
            sniffer: SidSniffer::default(),
            table: table.clone(),
            server: server_name.clone(),
        })
    }

    /// `on_response` for a WebSocket handshake `server` accepted (101), then
    /// holds the ids that now lead to `server` (those the request carried
    /// and those the response taught) for as long as the tunnel lives, so
    /// the client's reconnect with the same id finds them however long the
    /// tunnel lasted.
    pub fn on_switch(
        &self,
        headers: &mut HeaderMap,
        server: ServerId,
        server_name: &Arc<str>,
        lookup: &Lookup,
        https: bool,
    ) -> Option<StickHold> {
        let mut ids = Vec::new();
        let table = self.respond(headers, server, server_name, lookup, https, &mut ids)?;
        ids.sort_unstable();
        ids.dedup();
        StickHold::new(table.clone(), ids)
    }

    /// The common part of `on_response` and `on_switch`; adds to `ids` the
    /// ids that lead to `server` afterwards. The table, if there is one.
    fn respond(
        &self,
        headers: &mut HeaderMap,
        server: ServerId,
        server_name: &Arc<str>,
        lookup: &Lookup,
        https: bool,
        ids: &mut Vec<String>,
    ) -> Option<&Arc<dyn StickTable>> {
        if let (Some(cookie), Some(state)) = (&self.cookie, lookup.cookie) {
            cookie.rewrite_response(headers, server, state, https);
        }
        let table = self.table.as_ref()?;
        // Ids are re-pointed when their server could not take the request
        // (redispatch, a drain past its deadline), never because a cookie
        // chose another server: a cookie cannot move someone else's session.
        let cookie_chose = lookup.cookie.and_then(CookieState::server) == Some(server);
        let repoint = !cookie_chose && lookup.table_target.is_some_and(|t| t != server);
        for (id, stuck_to) in &lookup.known_ids {
            if repoint {
                table.insert(id, server_name.clone());
            }
            if repoint || *stuck_to == server {
                ids.push(id.clone());
            }
        }
        if let Some(name) = &self.learn_cookie {
            for value in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
                let pair = value.split(';').next().unwrap_or_default();
                if let Some((cookie_name, id)) = pair.split_once('=') {
                    if cookie_name.trim() == name && !id.trim().is_empty() {
                        table.insert(id.trim(), server_name.clone());
                        ids.push(id.trim().to_string());
                    }
                }
            }
        }
        if let Some(header) = &self.learn_header {
            if let Some(id) = headers.get(header).and_then(|v| v.to_str().ok()) {
                table.insert(id.trim(), server_name.clone());
                ids.push(id.trim().to_string());
            }
        }
        Some(table)
    }
}

/// Learns the `sid` of an Engine.IO handshake as its body streams to the client.
pub struct SidLearner {
    sniffer: SidSniffer,
    table: Arc<dyn StickTable>,
    server: Arc<str>,
}

impl SidLearner {
    /// Looks at the next body chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(sid) = self.sniffer.feed(chunk) {
            self.table.insert(&sid, self.server.clone());
        }
    }
}

impl std::fmt::Debug for SidLearner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidLearner")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}
