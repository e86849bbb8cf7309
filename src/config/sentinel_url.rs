//! The Redis Sentinel form of `[cluster] redis`:
//! `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/master[/db]`.
//! Pure parsing, shared by validation (`tether check`) and the cluster's
//! Redis client, so both read the URL the same way.

/// The scheme that asks the sentinels for the master.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The port of a sentinel written without one (Redis Sentinel's default).
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A parsed `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The sentinels, `(host, port)`, asked in this order for the master.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    pub master: String,
    /// User name for the data nodes (ACL), if any.
    pub username: Option<String>,
    /// Password for the data nodes (master and replicas), if any; the
    /// sentinels themselves are asked without one.
    pub password: Option<String>,
    /// The database number on the master.
    pub db: i64,
}

/// Parses `url` when it is a sentinel URL: `None` for any other scheme,
/// `Some(Err(what to fix))` for a malformed one.
pub fn parse_sentinel_url(url: &str) -> Option<Result<SentinelUrl, String>> {
    let rest = url.strip_prefix(SENTINEL_SCHEME)?;
    Some(parse_rest(rest))
}

fn parse_rest(rest: &str) -> Result<SentinelUrl, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, authority),
    };
    let (username, password) = match credentials {
        None => (None, None),
        Some(credentials) => {
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            let user = decode(user)?;
            let password = decode(password)?;
            (
                (!user.is_empty()).then_some(user),
                (!password.is_empty()).then_some(password),
            )
        }
    };
    if hosts.is_empty() {
        return Err(
            "no sentinel host: list them before the master name, like \"redis+sentinel://h1:26379,h2:26379/mymaster\""
                .into(),
        );
    }
    let sentinels = hosts.split(',').map(parse_host).collect::<Result<Vec<_>, _>>()?;
    let mut segments = path.split('/');
    let master = segments.next().unwrap_or_default();
    if master.is_empty() {
        return Err("no master name: add the name the sentinels monitor after the hosts, like \"redis+sentinel://h1:26379,h2:26379/mymaster\"".into());
    }
    let master = decode(master)?;
    let db = match segments.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| format!("database `{db}` is not a number: write \"…/{master}/0\" or leave it out"))?,
    };
    if segments.next().is_some_and(|s| !s.is_empty()) {
        return Err("too many path segments: write \"redis+sentinel://hosts/master[/db]\"".into());
    }
    Ok(SentinelUrl {
        sentinels,
        master,
        username,
        password,
        db,
    })
}

/// One `host[:port]` (or `[v6]:port`) of the host list.
fn parse_host(host: &str) -> Result<(String, u16), String> {
    let bad = || format!("sentinel `{host}` is not host[:port]: write the hosts as \"h1:26379,h2:26379\"");
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let (name, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (name, None),
            _ => (name, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || "/?#@".contains(c)) {
        return Err(bad());
    }
    let port = match port {
        None => DEFAULT_SENTINEL_PORT,
        Some(port) => port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((name.to_string(), port))
}

/// Percent-decodes a user name, password or master name.
fn decode(text: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("`{text}` is not valid UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_master_and_default_port() {
        let url = parse_sentinel_url("redis+sentinel://h1:26380,h2/mymaster")
            .expect("sentinel scheme")
            .expect("valid");
        assert_eq!(url.sentinels, vec![("h1".into(), 26380), ("h2".into(), 26379)]);
        assert_eq!(url.master, "mymaster");
        assert_eq!((url.username, url.password, url.db), (None, None, 0));
    }

    #[test]
    fn password_user_and_database() {
        let url = parse_sentinel_url("redis+sentinel://app:s%40cret@[::1]:26379,10.0.0.2:1/main/3")
            .expect("sentinel scheme")
            .expect("valid");
        assert_eq!(url.sentinels, vec![("::1".into(), 26379), ("10.0.0.2".into(), 1)]);
        assert_eq!(url.username.as_deref(), Some("app"));
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert_eq!((url.master.as_str(), url.db), ("main", 3));
        let url = parse_sentinel_url("redis+sentinel://:pw@h/m")
            .expect("scheme")
            .expect("valid");
        assert_eq!((url.username, url.password.as_deref()), (None, Some("pw")));
    }

    #[test]
    fn malformed_urls_say_what_is_missing() {
        for (url, needle) in [
            ("redis+sentinel:///mymaster", "no sentinel host"),
            ("redis+sentinel://:pw@/mymaster", "no sentinel host"),
            ("redis+sentinel://h1:26379,h2:26379", "no master name"),
            ("redis+sentinel://h1:26379/", "no master name"),
            ("redis+sentinel://h1:x/m", "not host[:port]"),
            ("redis+sentinel://h1,,h2/m", "not host[:port]"),
            ("redis+sentinel://h1/m/x", "not a number"),
            ("redis+sentinel://h1/m/0/extra", "too many"),
        ] {
            let err = parse_sentinel_url(url).expect("sentinel scheme").expect_err(url);
            assert!(err.contains(needle), "{url}: {err}");
        }
        assert!(parse_sentinel_url("redis://h1:6379").is_none());
    }
}
