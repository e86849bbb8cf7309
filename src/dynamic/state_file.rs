//! The state file (`state_file = "/var/lib/tether/state.json"`, like
//! HAProxy's `server-state-file`): without a cluster, it keeps the servers
//! added through the API and the operator states (drain, maint, ready and
//! the weight set through the API) across restarts.
//!
//! It is JSON, read once at start and written whole after every change:
//! into a temporary file beside it, flushed to disk, then renamed over the
//! old one, so a crash leaves either the old file or the new one, never a
//! torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ApiServer, MAX_API_SERVERS};
use crate::config::types::AdminState;
use crate::config::MAX_WEIGHT;

/// The format version written; another one is refused at start.
pub const VERSION: u32 = 1;
/// Most operator states kept (the oldest go first beyond it).
pub const MAX_OPERATOR_STATES: usize = 4096;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// The format version (`VERSION`).
    pub version: u32,
    /// The servers added through the API (those being deleted are left out:
    /// after a restart they hold no connection, so they are gone).
    #[serde(default)]
    pub servers: Vec<ApiServer>,
    /// The last operator change of each server.
    #[serde(default)]
    pub operator: Vec<OperatorState>,
}

/// A server's operator state after a change through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// The backend's name.
    pub backend: String,
    /// The server's name.
    pub server: String,
    /// `ready`, `drain` or `maint`.
    pub admin: AdminState,
    /// The weight.
    pub weight: u32,
    /// When it was set (Unix ms): the oldest are forgotten first beyond `MAX_OPERATOR_STATES`.
    pub at_unix_ms: u64,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but could not be read, or could not be written.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not a state file tether can use.
    #[error("state file {path}: {message} (fix it, or move it away to start without the state it keeps)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column for JSON errors.
        message: String,
    },
}

/// Reads the state file at `path`; `None` if there is none yet.
pub fn read(path: &Path) -> Result<Option<StateFile>, StateFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let invalid = |message: String| StateFileError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|err| invalid(err.to_string()))?;
    if file.version != VERSION {
        return Err(invalid(format!(
            "version {} is not the version this tether reads ({VERSION})",
            file.version
        )));
    }
    if file.servers.len() > MAX_API_SERVERS || file.operator.len() > MAX_OPERATOR_STATES {
        return Err(invalid(format!(
            "more than {MAX_API_SERVERS} servers or {MAX_OPERATOR_STATES} operator states"
        )));
    }
    for server in &file.servers {
        server
            .check()
            .map_err(|reason| invalid(format!("server `{}/{}`: {reason}", server.backend, server.name)))?;
    }
    if let Some(state) = file.operator.iter().find(|s| s.weight > MAX_WEIGHT) {
        return Err(invalid(format!(
            "operator state of `{}/{}`: weight above {MAX_WEIGHT}",
            state.backend, state.server
        )));
    }
    Ok(Some(file))
}

/// Writes `file` to `path` atomically: a temporary file beside it, flushed,
/// then renamed over it (and the folder flushed, so the rename lasts).
pub fn write(path: &Path, file: &StateFile) -> Result<(), StateFileError> {
    let io = |source: std::io::Error| StateFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = serde_json::to_string_pretty(file).map_err(|err| io(std::io::Error::other(err)))?;
    text.push('\n');
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp.{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(err));
    }
    // The rename is durable once the folder is flushed; not every system allows it.
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(folder) = std::fs::File::open(folder) {
            let _ = folder.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-state-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.json")
    }

    #[test]
    fn a_written_file_reads_back_and_no_file_is_no_state() {
        let path = temp("roundtrip");
        let _ = std::fs::remove_file(&path);
        assert!(read(&path).unwrap().is_none());
        let file = StateFile {
            version: VERSION,
            servers: vec![ApiServer {
                backend: "ws".into(),
                name: "s4".into(),
                address: "10.0.0.4:8200".parse().unwrap(),
                weight: 2,
                maxconn: Some(10),
                cookie: None,
            }],
            operator: vec![OperatorState {
                backend: "ws".into(),
                server: "s1".into(),
                admin: AdminState::Drain,
                weight: 7,
                at_unix_ms: 1,
            }],
        };
        write(&path, &file).unwrap();
        assert_eq!(read(&path).unwrap(), Some(file.clone()));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"admin\": \"drain\"") && text.contains("\"10.0.0.4:8200\""),
            "{text}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        let path = temp("bad");
        for (text, says) in [
            ("{", "EOF"),
            (r#"{"version": 2}"#, "version 2"),
            (r#"{"version": 1, "extra": 1}"#, "unknown field"),
            (
                r#"{"version": 1, "servers": [{"backend": "ws", "name": "a b", "address": "10.0.0.1:80"}]}"#,
                "`name` must be",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("state.json"), "{text}: {err}");
        }
    }
}
