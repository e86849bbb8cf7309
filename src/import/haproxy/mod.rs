//! HAProxy: the lexer (words, quotes, escapes, comments), the section
//! parser (`global`, `defaults`, `frontend`, `backend`, `listen`, …) and
//! the entry of the translation (`proxy`, `backend`, `acl`).

mod acl;
mod backend;
mod proxy;

use super::output::Origin;
use super::{ParseError, Translation};

/// One directive: its words (unquoted, unescaped) and its line.
#[derive(Debug, Clone)]
pub(super) struct Directive {
    pub words: Vec<String>,
    pub origin: Origin,
}

impl Directive {
    /// The word at `i`, or "".
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

/// What kind of section a block of directives is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Global,
    Defaults,
    Frontend,
    Backend,
    Listen,
    /// `userlist`, `peers`, `resolvers`, … : nothing tether has.
    Other,
}

/// A section and its directives.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub kind: Kind,
    pub name: String,
    pub origin: Origin,
    pub directives: Vec<Directive>,
}

/// Translates a whole `haproxy.cfg`.
pub(super) fn translate(text: &str, file: &str) -> Result<Translation, ParseError> {
    let blocks = parse(text).map_err(|(line, reason)| ParseError {
        file: file.to_string(),
        line,
        reason,
    })?;
    let mut doc = proxy::translate(&blocks).map_err(|(line, reason)| ParseError {
        file: file.to_string(),
        line,
        reason,
    })?;
    doc.drop_empty_backends();
    Ok(doc.render(file, "HAProxy"))
}

/// Splits the file into sections; an error is (line, reason).
fn parse(text: &str) -> Result<Vec<Block>, (usize, String)> {
    let mut blocks: Vec<Block> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let words = words(raw_line).map_err(|reason| (line, reason))?;
        let Some(first) = words.first() else { continue };
        let origin = Origin {
            line,
            text: redacted(raw_line.trim(), &words),
        };
        let kind = match first.as_str() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            "listen" => Some(Kind::Listen),
            "userlist" | "peers" | "resolvers" | "mailers" | "program" | "http-errors" | "ring" | "cache"
            | "fcgi-app" | "crt-store" | "traces" => Some(Kind::Other),
            _ => None,
        };
        if let Some(kind) = kind {
            let name = words.get(1).cloned().unwrap_or_default();
            if name.is_empty() && matches!(kind, Kind::Frontend | Kind::Backend | Kind::Listen) {
                return Err((line, format!("`{first}` needs a name")));
            }
            let mut block = Block {
                kind,
                name,
                origin,
                directives: Vec::new(),
            };
            if kind == Kind::Listen && words.len() > 2 {
                // `listen NAME ADDR` is the old form of a `bind`.
                block.directives.push(Directive {
                    words: vec!["bind".to_string(), words[2].clone()],
                    origin: block.origin.clone(),
                });
            }
            blocks.push(block);
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            return Err((
                line,
                format!(
                    "`{first}` is outside any section: start one with global, defaults, frontend, backend or listen"
                ),
            ));
        };
        block.directives.push(Directive { words, origin });
    }
    Ok(blocks)
}

/// The line as comments and warnings quote it: passwords (`stats auth
/// user:password`, `user NAME password|insecure-password SECRET`) replaced by
/// `****`, so the import never copies a secret into the new file or a log.
fn redacted(line: &str, words: &[String]) -> String {
    match words.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["stats", "auth", credentials, ..] => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("stats auth {user}:****")
        }
        ["user", name, kind @ ("password" | "insecure-password"), ..] => format!("user {name} {kind} ****"),
        _ => line.to_string(),
    }
}

/// The words of one line, HAProxy-style: spaces separate, `#` starts a
/// comment, `\` escapes the next character, `"…"` groups with escapes,
/// `'…'` groups literally.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '#' => break,
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('r') => current.push('\r'),
                    Some('n') => current.push('\n'),
                    Some('t') => current.push('\t'),
                    Some(next) => current.push(next),
                    None => current.push('\\'),
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(next) => current.push(next),
                            None => return Err("unterminated double quote".to_string()),
                        },
                        Some(other) => current.push(other),
                        None => return Err("unterminated double quote".to_string()),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(other) => current.push(other),
                        None => return Err("unterminated single quote".to_string()),
                    }
                }
            }
            other => {
                in_word = true;
                current.push(other);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_haproxy_quoting() {
        assert_eq!(words("  bind *:80  # comment").unwrap(), ["bind", "*:80"]);
        assert_eq!(
            words(r#"option httpchk GET /health HTTP/1.1\r\nHost:\ a"#).unwrap(),
            ["option", "httpchk", "GET", "/health", "HTTP/1.1\r\nHost: a"]
        );
        assert_eq!(
            words(r#"acl a hdr(x) "a b" 'c\d'"#).unwrap(),
            ["acl", "a", "hdr(x)", "a b", "c\\d"]
        );
        assert!(words("acl a path \"x").is_err());
    }

    #[test]
    fn a_directive_before_any_section_is_a_parse_error() {
        let err = parse("\nbind :80\n").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("outside any section"));
        assert_eq!(parse("frontend\n").unwrap_err().0, 1);
    }
}
