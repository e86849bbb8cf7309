//! NGINX: the lexer (words, quotes, `;`, `{`, `}`, comments), the block
//! parser, and the entry of the translation (`http`, `upstream`, `server`).

mod server;
mod upstream;

use super::output::Origin;
use super::{ParseError, Translation};

/// One directive: its name, arguments (unquoted), line, and block if it has one.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub name: String,
    pub args: Vec<String>,
    pub origin: Origin,
    pub block: Option<Vec<Node>>,
}

impl Node {
    /// The argument at `i`, or "".
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", String::as_str)
    }
}

/// Translates a whole `nginx.conf` (or a file of `http`-level directives, as in `conf.d/`).
pub(super) fn translate(text: &str, file: &str) -> Result<Translation, ParseError> {
    let error = |(line, reason): (usize, String)| ParseError {
        file: file.to_string(),
        line,
        reason,
    };
    let tokens = tokens(text).map_err(error)?;
    let nodes = parse(&tokens).map_err(error)?;
    let mut doc = server::translate(&nodes).map_err(error)?;
    doc.drop_empty_backends();
    Ok(doc.render(file, "NGINX"))
}

/// A token and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<(Token, usize)>, (usize, String)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let mut word_line = 1;
    let flush = |word: &mut String, out: &mut Vec<(Token, usize)>, at: usize| {
        if !word.is_empty() {
            out.push((Token::Word(std::mem::take(word)), at));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut word, &mut out, word_line);
                line += 1;
            }
            c if c.is_whitespace() => flush(&mut word, &mut out, word_line),
            '#' if word.is_empty() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' | '{' | '}' => {
                flush(&mut word, &mut out, word_line);
                let token = match c {
                    ';' => Token::Semicolon,
                    '{' => Token::Open,
                    _ => Token::Close,
                };
                out.push((token, line));
            }
            '"' | '\'' if word.is_empty() => {
                let start = line;
                let mut quoted = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') => match chars.next() {
                            Some(next) => unescape(&mut quoted, next),
                            None => return Err((start, "unterminated quote".to_string())),
                        },
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            quoted.push(other);
                        }
                        None => return Err((start, "unterminated quote".to_string())),
                    }
                }
                // An empty quoted string is a word too ('' in a map).
                out.push((Token::Word(quoted), start));
            }
            '\\' => {
                if word.is_empty() {
                    word_line = line;
                }
                if let Some(next) = chars.next() {
                    unescape(&mut word, next);
                }
            }
            other => {
                if word.is_empty() {
                    word_line = line;
                }
                word.push(other);
            }
        }
    }
    flush(&mut word, &mut out, word_line);
    Ok(out)
}

/// Words as they would be written: empty ones and ones with spaces quoted.
fn shown(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) {
                format!("\"{w}\"")
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// NGINX's escapes: `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other `\x` stays
/// as written (so `\.` reaches a regular expression intact).
fn unescape(out: &mut String, next: char) {
    match next {
        '"' | '\'' | '\\' => out.push(next),
        't' => out.push('\t'),
        'r' => out.push('\r'),
        'n' => out.push('\n'),
        other => {
            out.push('\\');
            out.push(other);
        }
    }
}

fn parse(tokens: &[(Token, usize)]) -> Result<Vec<Node>, (usize, String)> {
    let mut at = 0;
    let nodes = block(tokens, &mut at, None)?;
    Ok(nodes)
}

/// The directives up to the `}` closing the block opened at `opened` (or the end of the file).
fn block(tokens: &[(Token, usize)], at: &mut usize, opened: Option<usize>) -> Result<Vec<Node>, (usize, String)> {
    let mut nodes = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut first_line = 0;
    while let Some((token, line)) = tokens.get(*at) {
        *at += 1;
        match token {
            Token::Word(w) => {
                if words.is_empty() {
                    first_line = *line;
                }
                words.push(w.clone());
            }
            Token::Semicolon => {
                let Some((name, args)) = words.split_first() else {
                    return Err((*line, "unexpected `;`".to_string()));
                };
                nodes.push(Node {
                    name: name.clone(),
                    args: args.to_vec(),
                    origin: Origin {
                        line: first_line,
                        text: format!("{};", shown(&words)),
                    },
                    block: None,
                });
                words.clear();
            }
            Token::Open => {
                let Some((name, args)) = words.split_first() else {
                    return Err((*line, "unexpected `{`: a block needs a directive name".to_string()));
                };
                let origin = Origin {
                    line: first_line,
                    text: format!("{} {{", shown(&words)),
                };
                let (name, args) = (name.clone(), args.to_vec());
                words.clear();
                let inner = block(tokens, at, Some(*line))?;
                nodes.push(Node {
                    name,
                    args,
                    origin,
                    block: Some(inner),
                });
            }
            Token::Close => {
                if !words.is_empty() {
                    return Err((first_line, format!("`{}` is missing its `;`", words.join(" "))));
                }
                return match opened {
                    Some(_) => Ok(nodes),
                    None => Err((*line, "unexpected `}`".to_string())),
                };
            }
        }
    }
    if !words.is_empty() {
        return Err((first_line, format!("`{}` is missing its `;`", words.join(" "))));
    }
    match opened {
        Some(line) => Err((line, "this block's `{` is never closed with `}`".to_string())),
        None => Ok(nodes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Node>, (usize, String)> {
        parse(&tokens(text)?)
    }

    #[test]
    fn blocks_nest_and_keep_their_lines() {
        let nodes =
            read("http {\n  upstream ws { server 127.0.0.1:1 weight=2; }\n  map $a $b { default x; '' y; }\n}\n")
                .unwrap();
        let http = nodes[0].block.as_ref().unwrap();
        assert_eq!(http[0].name, "upstream");
        assert_eq!(http[0].origin.line, 2);
        assert_eq!(http[0].block.as_ref().unwrap()[0].args, ["127.0.0.1:1", "weight=2"]);
        assert_eq!(http[1].block.as_ref().unwrap()[1].name, "");
    }

    #[test]
    fn broken_files_are_parse_errors_with_their_line() {
        assert_eq!(read("http {\n server {\n").unwrap_err().0, 2);
        assert_eq!(read("a b;\n}\n").unwrap_err().0, 2);
        assert!(read("worker_processes 2\n").unwrap_err().1.contains("missing its `;`"));
        assert_eq!(read("x \"abc;\n").unwrap_err().0, 1);
    }
}
