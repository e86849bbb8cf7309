//! HAProxy ACLs and `if`/`unless` conditions → tether route conditions.
//!
//! An ACL is an OR of its values (and of its repeated definitions); a
//! condition is an OR (`||`, `or`) of terms, each an AND of ACLs. A tether
//! route is `all` (AND) plus `any` (OR), so each term becomes one route, or
//! several when more than one of its ACLs has several values. Negation
//! (`!`, `unless`) has no tether equivalent.

use std::collections::HashMap;

use super::super::output::quote;
use super::super::regex_escape;

/// One tether route's conditions, rendered as inline tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RouteConditions {
    /// Every one must hold.
    pub all: Vec<String>,
    /// At least one must hold.
    pub any: Vec<String>,
}

/// The ACLs of one section: name → its alternatives, or why it cannot be expressed.
#[derive(Debug, Default, Clone)]
pub(super) struct Acls {
    defs: HashMap<String, Result<Vec<String>, String>>,
}

/// Routes are expanded at most to this many per `use_backend` line.
const MAX_EXPANSION: usize = 16;

impl Acls {
    /// Adds `acl NAME CRITERION [FLAGS] [VALUES]` (words after `acl`); Err is a parse error.
    pub fn define(&mut self, words: &[String]) -> Result<(), String> {
        let (Some(name), Some(_)) = (words.first(), words.get(1)) else {
            return Err("`acl` needs a name and a criterion, like `acl is_ws path_beg /ws`".to_string());
        };
        let translated = conditions(&words[1..]);
        let entry = self.defs.entry(name.clone()).or_insert_with(|| Ok(Vec::new()));
        match (entry.as_mut(), translated) {
            (Ok(list), Ok(more)) => list.extend(more),
            (Ok(_), Err(reason)) => *entry = Err(format!("acl `{name}`: {reason}")),
            (Err(_), _) => {}
        }
        Ok(())
    }

    /// The routes of a condition (the words after `if`/`unless`, that word
    /// included). Outer Err: a parse error (unknown ACL); inner Err: why it
    /// cannot be expressed.
    pub fn routes(&self, words: &[String]) -> Result<Result<Vec<RouteConditions>, String>, String> {
        let Some((keyword, rest)) = words.split_first() else {
            return Ok(Err("no condition".to_string()));
        };
        if rest.is_empty() {
            return Err(format!("`{keyword}` needs a condition"));
        }
        let mut terms: Vec<Vec<Result<Vec<String>, String>>> = vec![Vec::new()];
        let mut i = 0;
        while i < rest.len() {
            let word = rest[i].as_str();
            i += 1;
            if word == "||" || word == "or" {
                terms.push(Vec::new());
                continue;
            }
            let literal = if word == "{" || word.starts_with('{') {
                // An anonymous ACL: `{ path_beg /ws }`.
                let mut inner: Vec<String> = Vec::new();
                let first = word.trim_start_matches('{');
                if !first.is_empty() {
                    inner.push(first.to_string());
                }
                loop {
                    let Some(next) = rest.get(i) else {
                        return Err("an anonymous ACL `{ … }` is not closed".to_string());
                    };
                    i += 1;
                    if next == "}" {
                        break;
                    }
                    inner.push(next.clone());
                }
                conditions(&inner)
            } else if let Some(name) = word.strip_prefix('!') {
                if name.is_empty() || !self.known(name) {
                    return Err(format!("`{word}`: no ACL named `{name}` is defined before this line"));
                }
                Err(format!("`!{name}`: tether routes cannot negate a condition"))
            } else {
                if !self.known(word) {
                    return Err(format!("no ACL named `{word}` is defined before this line"));
                }
                self.lookup(word)
            };
            if let Some(term) = terms.last_mut() {
                term.push(literal);
            }
        }
        if keyword == "unless" {
            return Ok(Err("`unless`: tether routes cannot negate a condition".to_string()));
        }
        let mut routes = Vec::new();
        for term in terms {
            let mut alternatives = Vec::new();
            for literal in term {
                match literal {
                    Ok(list) => alternatives.push(list),
                    Err(reason) => return Ok(Err(reason)),
                }
            }
            match expand(alternatives) {
                Ok(more) => routes.extend(more),
                Err(reason) => return Ok(Err(reason)),
            }
        }
        if routes.len() > MAX_EXPANSION {
            return Ok(Err(format!("it would take {} tether routes", routes.len())));
        }
        Ok(Ok(routes))
    }

    fn known(&self, name: &str) -> bool {
        self.defs.contains_key(name) || predefined(name).is_some()
    }

    fn lookup(&self, name: &str) -> Result<Vec<String>, String> {
        match self.defs.get(name) {
            Some(def) => def.clone(),
            None => predefined(name).unwrap_or_else(|| Err(format!("no ACL named `{name}`"))),
        }
    }
}

/// An AND of ORs as routes: the one multi-valued ACL goes in `any`; with
/// several, the product is spelled out.
fn expand(alternatives: Vec<Vec<String>>) -> Result<Vec<RouteConditions>, String> {
    if alternatives.is_empty() {
        return Err("an empty condition".to_string());
    }
    let multi = alternatives.iter().filter(|a| a.len() > 1).count();
    if multi <= 1 {
        let mut route = RouteConditions {
            all: Vec::new(),
            any: Vec::new(),
        };
        for list in alternatives {
            if list.len() > 1 {
                route.any = list;
            } else {
                route.all.extend(list);
            }
        }
        return Ok(vec![route]);
    }
    let mut products: Vec<Vec<String>> = vec![Vec::new()];
    for list in alternatives {
        let mut next = Vec::new();
        for prefix in &products {
            for condition in &list {
                let mut p = prefix.clone();
                p.push(condition.clone());
                next.push(p);
            }
        }
        if next.len() > MAX_EXPANSION {
            return Err(format!("it would take more than {MAX_EXPANSION} tether routes"));
        }
        products = next;
    }
    Ok(products
        .into_iter()
        .map(|all| RouteConditions { all, any: Vec::new() })
        .collect())
}

/// HAProxy's predefined ACLs that tether can express.
fn predefined(name: &str) -> Option<Result<Vec<String>, String>> {
    let methods: &[&str] = match name {
        "METH_GET" => &["GET", "HEAD"],
        "METH_POST" => &["POST"],
        "METH_PUT" => &["PUT"],
        "METH_DELETE" => &["DELETE"],
        "METH_HEAD" => &["HEAD"],
        "METH_OPTIONS" => &["OPTIONS"],
        "METH_CONNECT" => &["CONNECT"],
        "METH_TRACE" => &["TRACE"],
        "TRUE" | "FALSE" | "HTTP" | "HTTP_1.0" | "HTTP_1.1" | "HTTP_2.0" | "HTTP_URL_ABS" | "HTTP_URL_SLASH"
        | "HTTP_URL_STAR" | "HTTP_CONTENT" | "LOCALHOST" | "RDP_COOKIE" | "REQ_CONTENT" | "WAIT_END" => {
            return Some(Err(format!("predefined ACL `{name}` has no tether condition")))
        }
        _ => return None,
    };
    Some(Ok(methods
        .iter()
        .map(|m| format!("{{ method = {} }}", quote(m)))
        .collect()))
}

/// How an ACL compares (`-m`, or the criterion's suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Str,
    Beg,
    End,
    Sub,
    Reg,
    Found,
}

/// What an ACL fetches.
enum Fetch {
    Path,
    Host,
    Header(String),
    Query(String),
    Method,
}

/// The tether conditions (alternatives) of one criterion with its flags and values.
fn conditions(words: &[String]) -> Result<Vec<String>, String> {
    let criterion = words[0].as_str();
    let (base, arg) = match criterion.split_once('(') {
        Some((base, rest)) => (base, Some(rest.trim_end_matches(')').to_string())),
        None => (criterion, None),
    };
    let (fetch_name, mut method) = match base.rsplit_once('_') {
        Some((f, "beg")) => (f, Match::Beg),
        Some((f, "end")) => (f, Match::End),
        Some((f, "sub")) => (f, Match::Sub),
        Some((f, "reg")) => (f, Match::Reg),
        _ => (base, Match::Str),
    };
    let fetch = match (fetch_name, arg) {
        ("path", None) => Fetch::Path,
        ("hdr" | "req.hdr", Some(h)) if h.eq_ignore_ascii_case("host") => Fetch::Host,
        ("hdr" | "req.hdr", Some(h)) if !h.is_empty() => Fetch::Header(h.to_ascii_lowercase()),
        ("url_param" | "urlp", Some(p)) if !p.is_empty() => Fetch::Query(p),
        ("method", None) => Fetch::Method,
        ("src", _) => return Err("tether routes cannot test the client address (`src`)".to_string()),
        _ => return Err(format!("`{criterion}` has no tether condition")),
    };
    let mut ignore_case = false;
    let mut values = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let word = words[i].as_str();
        i += 1;
        match word {
            "-i" => ignore_case = true,
            "-n" | "-u" => {}
            "--" => {
                values.extend(words[i..].iter().cloned());
                break;
            }
            "-m" => {
                method = match words.get(i).map(String::as_str) {
                    Some("str") => Match::Str,
                    Some("beg") => Match::Beg,
                    Some("end") => Match::End,
                    Some("sub") => Match::Sub,
                    Some("reg") => Match::Reg,
                    Some("found") => Match::Found,
                    other => {
                        return Err(format!(
                            "match method `-m {}` has no tether condition",
                            other.unwrap_or("")
                        ))
                    }
                };
                i += 1;
            }
            "-f" => return Err("patterns read from a file (`-f`) are not read by the importer".to_string()),
            flag if flag.starts_with('-') && flag.len() > 1 && values.is_empty() => {
                return Err(format!("flag `{flag}` has no tether equivalent"))
            }
            value => values.push(value.to_string()),
        }
    }
    if method == Match::Found {
        return match fetch {
            Fetch::Header(h) => Ok(vec![format!("{{ header = {} }}", quote(&h))]),
            Fetch::Query(q) => Ok(vec![format!("{{ query = {} }}", quote(&q))]),
            _ => Err(format!("`{criterion} -m found` has no tether condition")),
        };
    }
    if values.is_empty() {
        return Err(format!("`{criterion}` without values"));
    }
    values
        .iter()
        .map(|value| one(&fetch, method, ignore_case, value, criterion))
        .collect()
}

/// One value's condition.
fn one(fetch: &Fetch, method: Match, ignore_case: bool, value: &str, criterion: &str) -> Result<String, String> {
    let case = if ignore_case { "(?i)" } else { "" };
    let regex = |pattern: String| -> Result<String, String> {
        regex::Regex::new(&pattern)
            .map(|_| format!("{{ path_regex = {} }}", quote(&pattern)))
            .map_err(|_| format!("the regular expression `{value}` is not one tether (Rust regex) accepts"))
    };
    let none = || Err(format!("`{criterion}` with this match has no tether condition"));
    match fetch {
        Fetch::Path => match (method, ignore_case) {
            (Match::Str, false) => Ok(format!("{{ path = {} }}", quote(value))),
            (Match::Beg, false) => Ok(format!("{{ path_prefix = {} }}", quote(value))),
            (Match::Str, true) => regex(format!("{case}^{}$", regex_escape(value))),
            (Match::Beg, true) => regex(format!("{case}^{}", regex_escape(value))),
            (Match::End, _) => regex(format!("{case}{}$", regex_escape(value))),
            (Match::Sub, _) => regex(format!("{case}{}", regex_escape(value))),
            (Match::Reg, _) => regex(format!("{case}{value}")),
            (Match::Found, _) => none(),
        },
        Fetch::Host => {
            if value.contains(':') {
                return Err(format!(
                    "`{value}`: tether compares the host without its port; write the host alone"
                ));
            }
            match method {
                Match::Str => Ok(format!("{{ host = {} }}", quote(value))),
                Match::Beg => Ok(format!("{{ host_prefix = {} }}", quote(value))),
                _ => none(),
            }
        }
        Fetch::Header(name) => match method {
            Match::Str => Ok(format!("{{ header = {}, equals = {} }}", quote(name), quote(value))),
            Match::Beg => Ok(format!("{{ header = {}, prefix = {} }}", quote(name), quote(value))),
            _ => Err(format!(
                "`{criterion}`: tether tests a header for presence, equality or a prefix only"
            )),
        },
        Fetch::Query(name) => match (method, ignore_case) {
            (Match::Str, false) => Ok(format!("{{ query = {}, equals = {} }}", quote(name), quote(value))),
            _ => Err(format!(
                "`{criterion}`: tether tests a query parameter for presence or exact equality only"
            )),
        },
        Fetch::Method => match method {
            Match::Str if value.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Ok(format!("{{ method = {} }}", quote(&value.to_ascii_uppercase())))
            }
            _ => none(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn criteria_become_tether_conditions() {
        assert_eq!(
            conditions(&w("path_beg /socket.io /ws")).unwrap(),
            ["{ path_prefix = \"/socket.io\" }", "{ path_prefix = \"/ws\" }"]
        );
        assert_eq!(
            conditions(&w("path_end .js")).unwrap(),
            ["{ path_regex = \"\\\\.js$\" }"]
        );
        assert_eq!(
            conditions(&w("path_beg -i /WS")).unwrap(),
            ["{ path_regex = \"(?i)^/WS\" }"]
        );
        assert_eq!(
            conditions(&w("hdr(host) -i ws.example.com")).unwrap(),
            ["{ host = \"ws.example.com\" }"]
        );
        assert_eq!(
            conditions(&w("hdr_beg(host) -i ws")).unwrap(),
            ["{ host_prefix = \"ws\" }"]
        );
        assert_eq!(
            conditions(&w("hdr(Upgrade) -i WebSocket")).unwrap(),
            ["{ header = \"upgrade\", equals = \"WebSocket\" }"]
        );
        assert_eq!(
            conditions(&w("url_param(sid) -m found")).unwrap(),
            ["{ query = \"sid\" }"]
        );
        assert_eq!(conditions(&w("method post")).unwrap(), ["{ method = \"POST\" }"]);
        assert!(conditions(&w("src 10.0.0.0/8")).unwrap_err().contains("client address"));
        assert!(conditions(&w("hdr_end(host) .com")).is_err());
        assert!(conditions(&w("hdr_sub(user-agent) bot")).is_err());
    }

    #[test]
    fn conditions_combine_into_routes() {
        let mut acls = Acls::default();
        acls.define(&w("is_ws path_beg /ws /socket.io")).unwrap();
        acls.define(&w("is_up hdr(upgrade) -i websocket")).unwrap();
        acls.define(&w("is_post method POST")).unwrap();
        acls.define(&w("from_lan src 10.0.0.0/8")).unwrap();
        let routes = acls.routes(&w("if is_ws is_up")).unwrap().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].any.len(), 2);
        assert_eq!(routes[0].all.len(), 1);
        assert_eq!(acls.routes(&w("if is_ws || is_up")).unwrap().unwrap().len(), 2);
        assert!(acls.routes(&w("if !is_ws")).unwrap().is_err());
        assert!(acls.routes(&w("unless is_ws")).unwrap().is_err());
        assert!(acls.routes(&w("if from_lan")).unwrap().is_err());
        assert!(acls.routes(&w("if nope")).is_err(), "an unknown ACL is a parse error");
        let anonymous = acls.routes(&w("if { path_beg /api } METH_POST")).unwrap().unwrap();
        assert_eq!(anonymous.len(), 1);
        assert_eq!(
            anonymous[0].all,
            ["{ path_prefix = \"/api\" }", "{ method = \"POST\" }"]
        );
        acls.define(&w("two path /a /b")).unwrap();
        assert_eq!(acls.routes(&w("if is_ws two")).unwrap().unwrap().len(), 4);
    }
}
