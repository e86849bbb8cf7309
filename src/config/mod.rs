//! The configuration file, read in stages (as sozu does):
//!
//! 1. the TOML text is deserialised into the serde shape (`raw`), whose
//!    single values (durations, rates, addresses as written, route
//!    conditions, enums) are already checked, with no I/O;
//! 2. `validate` checks the rules between values and builds the validated
//!    model (`model`, returned as `Config`): defaults filled in, backend
//!    names resolved to indexes, conditions as enums. Building it resolves
//!    host names (`resolve`, blocking) and reads TLS files (`tls`).
//!
//! Errors name file, line and column (`error`). Only a model reaches
//! `Snapshot::build`.

mod access_log;
mod acme;
mod address;
mod build;
mod condition;
mod duration;
mod error;
mod from_table;
mod header_rules;
pub mod model;
mod rate;
mod raw;
mod resolve;
pub mod sentinel_url;
mod tls;
pub mod types;
mod validate;

use std::path::Path;

pub use address::Address;
pub use condition::{Condition, HeaderTest};
pub use duration::{parse_duration, ConfigDuration};
pub use error::ConfigError;
pub use header_rules::{forbidden as forbidden_header, HeaderRules, Side as HeaderSide};
pub use model::{BackendId, Config, TunnelEngine};
pub use rate::{parse_rate, ConfigRate};
pub use resolve::resolve;
pub use validate::MAX_WEIGHT;

use error::SourceMap;

/// Reads and validates the configuration file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    parse_relative_to(&text, &path.display().to_string(), base)
}

/// Parses and validates configuration text; `origin` names it in errors.
/// Files the text names (certificates, keys, CAs) are taken from the
/// working directory when relative.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_relative_to(text, origin, Path::new(""))
}

/// Parses and validates configuration text; `origin` names it in errors, and
/// relative file paths in it (certificates, keys, CAs) start at `base`.
pub fn parse_relative_to(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
    let source = SourceMap::new(origin, text);
    let raw: raw::Config = toml::from_str(text).map_err(|err| {
        let message = err.message().trim_end().to_string();
        source.error(err.span(), message)
    })?;
    validate::validate(&raw, &source, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[frontend]]
name = "public"
bind = ["127.0.0.1:0"]
default_backend = "web"

[[backend]]
name = "web"
[[backend.server]]
name = "s1"
address = "127.0.0.1:8200"
"#;

    fn error_of(text: &str) -> (usize, String) {
        match parse(text, "test.toml") {
            Err(ConfigError::Invalid {
                line, message, file, ..
            }) => {
                assert_eq!(file, "test.toml");
                (line, message)
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_config_is_accepted_with_defaults() {
        let config = parse(GOOD, "test.toml").expect("valid");
        let backend = &config.backends[0];
        assert_eq!(backend.balance, types::Balance::Roundrobin);
        assert_eq!(backend.retries, 3);
        assert_eq!(backend.connect_timeout.as_secs(), 3);
        assert_eq!(config.frontends[0].http_request_timeout.as_secs(), 10);
        assert_eq!(backend.servers[0].weight, 1);
    }

    #[test]
    fn body_timeouts_and_log_redaction_have_defaults_and_can_be_set() {
        let config = parse(GOOD, "test.toml").expect("valid");
        assert_eq!(config.frontends[0].client_body_timeout.as_secs(), 60);
        assert_eq!(config.backends[0].server_body_timeout.as_secs(), 60);
        assert_eq!(config.log.redact_query, ["sid"]);
        let text = format!(
            "[log]\nredact_query = [\"token\", \"sid\"]\n{}",
            GOOD.replace("name = \"web\"", "name = \"web\"\ntimeouts = { server_body = \"5s\" }")
        );
        let config = parse(&text, "test.toml").expect("valid");
        assert_eq!(config.log.redact_query, ["token", "sid"]);
        assert_eq!(config.backends[0].server_body_timeout.as_secs(), 5);
    }

    #[test]
    fn http2_is_on_for_tls_frontends_only_unless_set_and_its_limits_are_checked() {
        let config = parse(GOOD, "test.toml").expect("valid");
        assert!(!config.frontends[0].http2, "a plain frontend takes h2c only when asked");
        assert_eq!(config.frontends[0].limits.http2_max_concurrent_streams, 100);
        assert_eq!(config.frontends[0].limits.http2_max_header_list_size, 32768);
        let text = GOOD.replace("default_backend = \"web\"", "default_backend = \"web\"\nhttp2 = true");
        assert!(parse(&text, "test.toml").expect("valid").frontends[0].http2);
        let text = GOOD.replace(
            "default_backend = \"web\"",
            "default_backend = \"web\"\nlimits = { http2_max_concurrent_streams = 0 }",
        );
        let (line, message) = error_of(&text);
        assert_eq!(line, 6);
        assert!(
            message.contains("`http2_max_concurrent_streams` must be between 1 and 10000"),
            "{message}"
        );
        let text = GOOD.replace(
            "default_backend = \"web\"",
            "default_backend = \"web\"\nlimits = { http2_max_header_list_size = 10 }",
        );
        let (_, message) = error_of(&text);
        assert!(
            message.contains("`http2_max_header_list_size` must be between 1024"),
            "{message}"
        );
    }

    #[test]
    fn a_redacted_parameter_must_be_a_plain_name() {
        let text = format!("[log]\nredact_query = [\"sid=\"]\n{GOOD}");
        let (line, message) = error_of(&text);
        assert_eq!(line, 2);
        assert!(message.contains("query parameter's name"), "{message}");
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let text = GOOD.replace("name = \"s1\"", "name = \"s1\"\nwieght = 3");
        let (line, message) = error_of(&text);
        assert_eq!(line, 11);
        assert!(message.contains("wieght"), "{message}");
    }

    #[test]
    fn a_bad_duration_names_its_line_and_the_fix() {
        let text = GOOD.replace(
            "name = \"web\"",
            "name = \"web\"\ntimeouts = { connect = \"3 seconds\" }",
        );
        let (line, message) = error_of(&text);
        assert_eq!(line, 9);
        assert!(message.contains("unknown unit"), "{message}");
    }

    #[test]
    fn an_unknown_backend_lists_the_known_ones() {
        let text = GOOD.replace("default_backend = \"web\"", "default_backend = \"wbe\"");
        let (line, message) = error_of(&text);
        assert_eq!(line, 5);
        assert!(message.contains("`wbe`") && message.contains("web"), "{message}");
    }

    #[test]
    fn a_condition_with_two_selectors_is_refused() {
        let ordered = GOOD.replace(
            "default_backend = \"web\"",
            "default_backend = \"web\"\n[[frontend.route]]\nbackend = \"web\"\nany = [{ path = \"/a\", host = \"x\" }]",
        );
        let (line, message) = error_of(&ordered);
        assert_eq!(line, 8);
        assert!(message.contains("exactly one"), "{message}");
    }

    #[test]
    fn a_bad_condition_in_a_list_is_located_at_its_own_table() {
        let text = GOOD.replace(
            "default_backend = \"web\"",
            "default_backend = \"web\"\n[[frontend.route]]\nbackend = \"web\"\nany = [{ path = \"/a\" },\n  { header = \"x\", prefix = \"a\", equals = \"b\" }]",
        );
        match parse(&text, "test.toml") {
            Err(ConfigError::Invalid {
                line, column, message, ..
            }) => {
                assert_eq!((line, column), (9, 3), "{message}");
                assert!(message.contains("not both"), "{message}");
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn url_param_needs_a_hash_key() {
        let text = GOOD.replace("name = \"web\"", "name = \"web\"\nbalance = \"url_param\"");
        let (line, message) = error_of(&text);
        assert_eq!(line, 9);
        assert!(message.contains("hash_key"), "{message}");
    }

    #[test]
    fn a_bad_regex_and_an_address_without_port_are_reported() {
        let text = GOOD.replace("127.0.0.1:8200", "127.0.0.1");
        let (line, message) = error_of(&text);
        assert_eq!(line, 11);
        assert!(message.contains("no port"), "{message}");
        let text = GOOD.replace(
            "default_backend = \"web\"",
            "default_backend = \"web\"\n[[frontend.route]]\nbackend = \"web\"\nany = [{ path_regex = \"(\" }]",
        );
        let (_, message) = error_of(&text);
        assert!(message.contains("regular expression"), "{message}");
    }

    #[test]
    fn duplicate_server_names_are_refused() {
        let text = format!("{GOOD}[[backend.server]]\nname = \"s1\"\naddress = \"127.0.0.1:8201\"\n");
        let (line, message) = error_of(&text);
        assert_eq!(line, 13);
        assert!(message.contains("already has a server"), "{message}");
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$V7kVjzRN0VnZBxkIDhAsTg$rAMwVPk8xv3R+pRdzgOrvCjtMb2XYIVCyfjrBjq8ltI";

    #[test]
    fn an_admin_listener_without_users_must_be_on_loopback() {
        let ok = format!("{GOOD}[admin]\nbind = \"127.0.0.1:9000\"\n");
        parse(&ok, "test.toml").expect("loopback without users is fine");
        let text = format!("{GOOD}[admin]\nbind = \"0.0.0.0:9000\"\n");
        let (line, message) = error_of(&text);
        assert_eq!(line, 13);
        assert!(
            message.contains("no `users`") && message.contains("loopback"),
            "{message}"
        );
        let with_user = format!(
            "{GOOD}[admin]\nbind = \"0.0.0.0:9000\"\nusers = [{{ name = \"admin\", password_hash = \"{HASH}\" }}]\n\
             allow = [\"10.0.0.0/8\"]\nmetrics_allow = [\"192.0.2.0/24\"]\n"
        );
        let config = parse(&with_user, "test.toml").expect("a user allows any address");
        let admin = config.admin.expect("admin");
        assert_eq!((admin.allow.len(), admin.metrics_allow.len()), (1, 1));
    }

    #[test]
    fn admin_users_need_an_argon2_hash_and_distinct_names() {
        let text = format!(
            "{GOOD}[admin]\nbind = \"127.0.0.1:9000\"\nusers = [{{ name = \"admin\", password_hash = \"secret\" }}]\n"
        );
        let (line, message) = error_of(&text);
        assert_eq!(line, 14);
        assert!(message.contains("hash-password"), "{message}");
        let text = format!(
            "{GOOD}[admin]\nbind = \"127.0.0.1:9000\"\nusers = [{{ name = \"a\", password_hash = \"{HASH}\" }},\n\
             {{ name = \"a\", password_hash = \"{HASH}\" }}]\n"
        );
        let (line, message) = error_of(&text);
        assert_eq!(line, 15);
        assert!(message.contains("already defined"), "{message}");
        let text = format!("{GOOD}[admin]\nbind = \"127.0.0.1:9000\"\nallow = [\"10.0.0.0/40\"]\n");
        let (line, message) = error_of(&text);
        assert_eq!(line, 14);
        assert!(message.contains("prefix length"), "{message}");
    }

    #[test]
    fn cluster_settings_have_defaults_and_bad_ones_are_located() {
        let config = parse(
            &format!("{GOOD}\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n"),
            "test.toml",
        )
        .expect("valid");
        let cluster = config.cluster.as_ref().expect("cluster");
        assert_eq!(cluster.prefix, "tether:");
        assert_eq!(cluster.timeout.as_millis(), 50);
        assert_eq!(cluster.sync_interval.as_secs(), 1);
        assert!(cluster.instance.is_none());
        let lines = GOOD.lines().count();
        let (line, message) = error_of(&format!("{GOOD}\n[cluster]\nredis = \"http://127.0.0.1:6379\"\n"));
        assert_eq!(line, lines + 3);
        assert!(message.contains("redis://"), "{message}");
        let (line, message) = error_of(&format!(
            "{GOOD}\n[cluster]\nredis = \"rediss://:pw@redis.example:6380/1\"\ntimeout = \"0ms\"\n"
        ));
        assert_eq!(line, lines + 4);
        assert!(message.contains("between 1ms and 5s"), "{message}");
        let (_, message) = error_of(&format!("{GOOD}\n[cluster]\nredis = \"redis://h:6379\"\nport = 1\n"));
        assert!(message.contains("unknown field"), "{message}");
        assert!(cluster.secret.is_none());
        let (line, message) = error_of(&format!(
            "{GOOD}\n[cluster]\nredis = \"redis://h:6379\"\nsecret = \"short\"\n"
        ));
        assert_eq!(line, lines + 4);
        assert!(message.contains("at least 16 bytes"), "{message}");
        let config = parse(
            &format!("{GOOD}\n[cluster]\nredis = \"redis://h:6379\"\nsecret = \"0123456789abcdef\"\n"),
            "test.toml",
        )
        .expect("valid");
        assert_eq!(
            config.cluster.and_then(|c| c.secret).as_deref(),
            Some("0123456789abcdef")
        );
    }
}
