//! What an access-log line says and how it is written: the record of one
//! exchange or tunnel, the table of named fields, the template parser
//! (`log_format = "$client … $status"`) and the three formats (`text`,
//! `json`, a template). Pure: bytes in, bytes out.
//!
//! A new field is one row of [`FIELDS`] (name, the line kinds whose `text`
//! and `json` lines carry it, how to read it from a [`Record`]) plus the
//! value on the record.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::SystemTime;

use super::time::Civil;

/// Which event a line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One HTTP exchange (a request and its response, or a refused handshake).
    Http,
    /// One finished WebSocket tunnel.
    Tunnel,
}

impl Kind {
    fn bit(self) -> u8 {
        match self {
            Kind::Http => HTTP,
            Kind::Tunnel => TUNNEL,
        }
    }
}

/// What one line reports; fields a kind does not have are `None` (written `-`).
pub struct Record<'a> {
    /// HTTP exchange or tunnel.
    pub kind: Kind,
    /// `http/1.1` or `h2`.
    pub protocol: &'a str,
    /// The request id (written as 16 hex digits).
    pub request_id: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The frontend's name (`-` when the frontend is gone).
    pub frontend: &'a str,
    /// The backend's name, once chosen.
    pub backend: Option<&'a str>,
    /// The server's name, once chosen.
    pub server: Option<&'a str>,
    /// The request method (HTTP lines).
    pub method: Option<&'a str>,
    /// The request target, already redacted (HTTP lines).
    pub uri: Option<&'a dyn fmt::Display>,
    /// The status sent to the client (HTTP lines).
    pub status: Option<u16>,
    /// Bytes from the client (request body; tunnel: client to server).
    pub bytes_in: u64,
    /// Bytes to the client (response body; tunnel: server to client).
    pub bytes_out: u64,
    /// Time from the request head (or the tunnel's opening) to the line, in microseconds.
    pub duration_us: u64,
    /// Why an exchange ended early (HTTP lines).
    pub error: Option<&'a str>,
    /// WebSocket messages from the client (tunnel lines).
    pub messages_in: Option<u64>,
    /// WebSocket messages to the client (tunnel lines).
    pub messages_out: Option<u64>,
    /// The Close code the client sent (tunnel lines; 0 when none).
    pub close_code_in: Option<u16>,
    /// The Close code the client received (tunnel lines; 0 when none).
    pub close_code_out: Option<u16>,
    /// Why the tunnel ended (tunnel lines).
    pub close: Option<&'a dyn fmt::Display>,
    /// The W3C trace the exchange or tunnel belongs to, when `[tracing]`
    /// is on (written as 32 hex digits, the `trace-id` of `traceparent`).
    pub trace_id: Option<u128>,
}

/// A field's value, as each format writes it.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    /// Text (quoted where the format quotes).
    Str(&'a str),
    /// Text written through `Display` (the request target, the close reason).
    Show(&'a dyn fmt::Display),
    /// A count or code.
    Uint(u64),
    /// Microseconds, written as milliseconds with three decimals.
    Millis(u64),
    /// 16 hex digits.
    Hex(u64),
    /// 32 hex digits (a trace id).
    Hex128(u128),
    /// A field this line does not have and `text`/`json` leave out
    /// (templates write `-`).
    Absent,
    /// An address.
    Addr(SocketAddr),
    /// The line's time, RFC 3339.
    Time,
    /// The line's time, Common Log Format.
    TimeClf,
}

const HTTP: u8 = 1;
const TUNNEL: u8 = 2;
const BOTH: u8 = HTTP | TUNNEL;
/// In templates only (`text` and `json` lines start with their own timestamp).
const TEMPLATE: u8 = 0;
/// In `text` and `json` lines only when the record has it (so lines stay
/// as they were without `[tracing]`).
const WHEN_SET: u8 = 4;

/// One named field: `$name` in a template, `name=` in `text`, `"name":` in `json`.
pub struct Field {
    /// The name.
    pub name: &'static str,
    /// The line kinds whose `text` and `json` lines carry it (bits).
    kinds: u8,
    /// Reads it from a record.
    value: for<'a> fn(&Record<'a>) -> Value<'a>,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.name)
    }
}

fn dash<'a>(text: Option<&'a str>) -> Value<'a> {
    text.map_or(Value::Str("-"), Value::Str)
}

/// Every field, in the order `text` and `json` lines write them.
pub static FIELDS: &[Field] = &[
    Field {
        name: "time",
        kinds: TEMPLATE,
        value: |_| Value::Time,
    },
    Field {
        name: "time_clf",
        kinds: TEMPLATE,
        value: |_| Value::TimeClf,
    },
    Field {
        name: "kind",
        kinds: BOTH,
        value: |r| {
            Value::Str(match r.kind {
                Kind::Http => "http",
                Kind::Tunnel => "tunnel",
            })
        },
    },
    Field {
        name: "protocol",
        kinds: BOTH,
        value: |r| Value::Str(r.protocol),
    },
    Field {
        name: "request_id",
        kinds: BOTH,
        value: |r| Value::Hex(r.request_id),
    },
    Field {
        name: "client",
        kinds: BOTH,
        value: |r| Value::Addr(r.client),
    },
    Field {
        name: "frontend",
        kinds: BOTH,
        value: |r| Value::Str(r.frontend),
    },
    Field {
        name: "backend",
        kinds: BOTH,
        value: |r| dash(r.backend),
    },
    Field {
        name: "server",
        kinds: BOTH,
        value: |r| dash(r.server),
    },
    Field {
        name: "method",
        kinds: HTTP,
        value: |r| dash(r.method),
    },
    Field {
        name: "uri",
        kinds: HTTP,
        value: |r| r.uri.map_or(Value::Str("-"), Value::Show),
    },
    Field {
        name: "status",
        kinds: HTTP,
        value: |r| r.status.map_or(Value::Str("-"), |s| Value::Uint(s.into())),
    },
    Field {
        name: "bytes_in",
        kinds: BOTH,
        value: |r| Value::Uint(r.bytes_in),
    },
    Field {
        name: "bytes_out",
        kinds: BOTH,
        value: |r| Value::Uint(r.bytes_out),
    },
    Field {
        name: "messages_in",
        kinds: TUNNEL,
        value: |r| r.messages_in.map_or(Value::Str("-"), Value::Uint),
    },
    Field {
        name: "messages_out",
        kinds: TUNNEL,
        value: |r| r.messages_out.map_or(Value::Str("-"), Value::Uint),
    },
    Field {
        name: "close_code_in",
        kinds: TUNNEL,
        value: |r| close_code(r.kind, r.close_code_in),
    },
    Field {
        name: "close_code_out",
        kinds: TUNNEL,
        value: |r| close_code(r.kind, r.close_code_out),
    },
    Field {
        name: "duration_ms",
        kinds: BOTH,
        value: |r| Value::Millis(r.duration_us),
    },
    Field {
        name: "error",
        kinds: HTTP,
        value: |r| dash(r.error),
    },
    Field {
        name: "close",
        kinds: TUNNEL,
        value: |r| r.close.map_or(Value::Str("-"), Value::Show),
    },
    Field {
        name: "trace_id",
        kinds: BOTH | WHEN_SET,
        value: |r| r.trace_id.map_or(Value::Absent, Value::Hex128),
    },
];

/// A tunnel's close code: 0 when no Close frame went that way (as the lines
/// always said); `-` on an HTTP line.
fn close_code(kind: Kind, code: Option<u16>) -> Value<'static> {
    match kind {
        Kind::Http => Value::Str("-"),
        Kind::Tunnel => Value::Uint(code.map_or(0, u64::from)),
    }
}

/// The names of every field, for error messages: `$time, $time_clf, …`.
pub fn field_names() -> String {
    let names: Vec<String> = FIELDS.iter().map(|f| format!("${}", f.name)).collect();
    names.join(", ")
}

/// How lines are written (`[log] log_format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `time  INFO tether::access: kind=http protocol=… key=value …` (the default).
    Text,
    /// One JSON object per line, the same field names.
    Json,
    /// The operator's template.
    Template(Template),
}

/// A parsed `log_format` template: literal text and `$field`s.
#[derive(Clone)]
pub struct Template {
    /// As written (two templates are equal when written the same).
    source: Box<str>,
    pieces: Vec<Piece>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Template {}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

#[derive(Clone, Debug)]
enum Piece {
    Literal(Box<str>),
    Field(&'static Field),
}

/// Why a template was refused, and where (a byte offset in the template).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// Byte offset of the offending `$` (or character) in the template.
    pub offset: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

impl Template {
    /// Parses `source`: `$name` or `${name}` is a field, `$$` a dollar
    /// sign, anything else is written as it stands.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let bytes = source.as_bytes();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                return Err(TemplateError {
                    offset: i,
                    message: "an access-log line is one line: remove the line break from `log_format`".into(),
                });
            }
            if b != b'$' {
                let next = source[i..].find(['$', '\n', '\r']).map_or(source.len(), |n| i + n);
                literal.push_str(&source[i..next]);
                i = next;
                continue;
            }
            let (name, end) = match bytes.get(i + 1) {
                Some(b'$') => {
                    literal.push('$');
                    i += 2;
                    continue;
                }
                Some(b'{') => {
                    let close = source[i + 2..]
                        .find('}')
                        .map(|n| i + 2 + n)
                        .ok_or_else(|| TemplateError {
                            offset: i,
                            message: "`${` opens a field name that is never closed: write `${name}`".into(),
                        })?;
                    (&source[i + 2..close], close + 1)
                }
                _ => {
                    let len = bytes[i + 1..].iter().take_while(|b| is_name_byte(**b)).count();
                    (&source[i + 1..i + 1 + len], i + 1 + len)
                }
            };
            if name.is_empty() {
                return Err(TemplateError {
                    offset: i,
                    message: "a `$` starts a field name, like `$status`: write `$$` for a dollar sign".into(),
                });
            }
            let field = FIELDS.iter().find(|f| f.name == name).ok_or_else(|| TemplateError {
                offset: i,
                message: format!("unknown access-log field `${name}`: the fields are {}", field_names()),
            })?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
            }
            pieces.push(Piece::Field(field));
            i = end;
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
            return Err(TemplateError {
                offset: 0,
                message: format!(
                    "`log_format` is \"text\", \"json\" or a template naming fields, like \"$client $status $uri\"; \
                     the fields are {}",
                    field_names()
                ),
            });
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Ok(Template {
            source: source.into(),
            pieces,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of its fields, in order (for tests and diagnostics).
    pub fn field_names(&self) -> Vec<&'static str> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Field(f) => Some(f.name),
                Piece::Literal(_) => None,
            })
            .collect()
    }
}

impl Format {
    /// Parses a `log_format` value: `"text"`, `"json"` or a template.
    pub fn parse(value: &str) -> Result<Format, TemplateError> {
        match value {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            template => Template::parse(template).map(Format::Template),
        }
    }

    /// Appends `record`'s line (with its newline) to `out`, at wall-clock time `now`.
    pub fn write(&self, record: &Record<'_>, now: SystemTime, out: &mut Vec<u8>) {
        match self {
            Format::Text => {
                Civil::of(now).write_rfc3339(out);
                out.extend_from_slice(b"  INFO tether::access:");
                for (field, value) in line_fields(record) {
                    out.push(b' ');
                    out.extend_from_slice(field.name.as_bytes());
                    out.push(b'=');
                    write_value(out, value, Escape::Text, now);
                }
            }
            Format::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                Civil::of(now).write_rfc3339(out);
                out.extend_from_slice(b"\",\"level\":\"INFO\"");
                for (field, value) in line_fields(record) {
                    out.extend_from_slice(b",\"");
                    out.extend_from_slice(field.name.as_bytes());
                    out.extend_from_slice(b"\":");
                    write_value(out, value, Escape::Json, now);
                }
                out.extend_from_slice(b",\"target\":\"tether::access\"}");
            }
            Format::Template(template) => {
                for piece in &template.pieces {
                    match piece {
                        Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                        Piece::Field(field) => write_value(out, (field.value)(record), Escape::Template, now),
                    }
                }
            }
        }
        out.push(b'\n');
    }
}

/// The fields a `text` or `json` line of `record` carries, with their
/// values: those of its kind, less any it does not have (`trace_id` untraced).
fn line_fields<'r, 'a>(record: &'r Record<'a>) -> impl Iterator<Item = (&'static Field, Value<'r>)> + 'r {
    let bit = record.kind.bit();
    FIELDS
        .iter()
        .filter(move |f| f.kinds & bit != 0)
        .map(move |f| (f, (f.value)(record)))
        .filter(|(_, value)| !matches!(value, Value::Absent))
}

/// How text values are protected in each format.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// logfmt: bare unless empty or holding a space, `"`, `\` or a control
    /// character, then quoted with `\"`, `\\`, `\n`, `\t`, `\r`, `\u{XX}`
    /// (an `=` stays bare, as `uri=/a?b=c` always was: a key ends at the first `=`).
    Text,
    /// A JSON string (RFC 8259 §7).
    Json,
    /// NGINX's default `escape`: `"`, `\`, control characters and DEL as `\xXX`.
    Template,
}

fn write_value(out: &mut Vec<u8>, value: Value<'_>, escape: Escape, now: SystemTime) {
    let quoted = escape == Escape::Json;
    match value {
        Value::Str(text) => write_text(out, text, escape),
        Value::Show(shown) => {
            if quoted {
                out.push(b'"');
            }
            let start = out.len();
            // Written bare first (the usual case needs nothing more), then
            // rewritten escaped when it holds anything to protect.
            let _ = write!(Raw(out), "{shown}");
            let empty_text = escape == Escape::Text && out.len() == start;
            if empty_text || out[start..].iter().any(|b| needs_escape(*b, escape)) {
                let bare = out.split_off(start);
                if quoted {
                    out.pop();
                }
                write_text(out, &String::from_utf8_lossy(&bare), escape);
            } else if quoted {
                out.push(b'"');
            }
        }
        Value::Uint(n) => push_u64(out, n),
        Value::Millis(us) => {
            push_u64(out, us / 1000);
            out.push(b'.');
            let frac = (us % 1000) as u32;
            out.extend_from_slice(&[
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ]);
        }
        Value::Hex(id) => write_hex(out, u128::from(id), 16, quoted),
        Value::Hex128(id) => write_hex(out, id, 32, quoted),
        Value::Absent => write_text(out, "-", escape),
        Value::Addr(addr) => {
            if quoted {
                out.push(b'"');
            }
            let _ = write!(Raw(out), "{addr}");
            if quoted {
                out.push(b'"');
            }
        }
        Value::Time | Value::TimeClf => {
            if quoted {
                out.push(b'"');
            }
            let civil = Civil::of(now);
            if matches!(value, Value::Time) {
                civil.write_rfc3339(out);
            } else {
                civil.write_clf(out);
            }
            if quoted {
                out.push(b'"');
            }
        }
    }
}

/// The low `digits` hex digits of `id`, lowercase (quoted in JSON).
fn write_hex(out: &mut Vec<u8>, id: u128, digits: u32, quoted: bool) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if quoted {
        out.push(b'"');
    }
    for shift in (0..digits).rev() {
        out.push(HEX[((id >> (shift * 4)) & 0xf) as usize]);
    }
    if quoted {
        out.push(b'"');
    }
}

/// Whether `b` makes a value need escaping (or, in `text`, quoting).
fn needs_escape(b: u8, escape: Escape) -> bool {
    match escape {
        Escape::Text => b <= b' ' || b == b'"' || b == b'\\' || b == 0x7f,
        Escape::Json => b < 0x20 || b == b'"' || b == b'\\',
        Escape::Template => b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f,
    }
}

fn write_text(out: &mut Vec<u8>, text: &str, escape: Escape) {
    let bytes = text.as_bytes();
    let clean = !bytes.iter().any(|b| needs_escape(*b, escape));
    match escape {
        Escape::Text if clean && !bytes.is_empty() => out.extend_from_slice(bytes),
        Escape::Template if clean => out.extend_from_slice(bytes),
        Escape::Text | Escape::Json => {
            out.push(b'"');
            if clean {
                out.extend_from_slice(bytes);
            } else {
                for &b in bytes {
                    match b {
                        b'"' => out.extend_from_slice(b"\\\""),
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b if b < 0x20 || (b == 0x7f && escape == Escape::Text) => {
                            let _ = if escape == Escape::Json {
                                write!(Raw(out), "\\u{:04x}", b)
                            } else {
                                write!(Raw(out), "\\u{{{:x}}}", b)
                            };
                        }
                        b => out.push(b),
                    }
                }
            }
            out.push(b'"');
        }
        Escape::Template => {
            for &b in bytes {
                if needs_escape(b, escape) {
                    let _ = write!(Raw(out), "\\x{:02X}", b);
                } else {
                    out.push(b);
                }
            }
        }
    }
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `fmt::Write` into a byte buffer (for `Display` values).
struct Raw<'a>(&'a mut Vec<u8>);

impl fmt::Write for Raw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record<'a>(kind: Kind, uri: &'a dyn fmt::Display, close: &'a dyn fmt::Display) -> Record<'a> {
        let http = kind == Kind::Http;
        Record {
            kind,
            protocol: "http/1.1",
            request_id: 0x00ab_cdef_0123_4567,
            client: "127.0.0.1:5000".parse().unwrap(),
            frontend: "public",
            backend: Some("web"),
            server: http.then_some("s1"),
            method: http.then_some("GET"),
            uri: http.then_some(uri),
            status: http.then_some(200),
            bytes_in: 3,
            bytes_out: 1234,
            duration_us: 12_345,
            error: None,
            messages_in: (!http).then_some(2),
            messages_out: (!http).then_some(5),
            close_code_in: None,
            close_code_out: (!http).then_some(1000),
            close: (!http).then_some(close),
            trace_id: None,
        }
    }

    #[test]
    fn a_trace_id_is_written_when_the_line_has_one_and_left_out_of_text_and_json_when_not() {
        let (uri, close) = ("/a", "client closed");
        let mut traced = record(Kind::Http, &uri, &close);
        traced.trace_id = Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736);
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(line(&Format::Text, &traced).ends_with(&format!(" trace_id={id}\n")));
        assert!(line(&Format::Json, &traced).contains(&format!(",\"trace_id\":\"{id}\",")));
        let template = Format::parse("$request_id $trace_id").unwrap();
        assert_eq!(line(&template, &traced), format!("00abcdef01234567 {id}\n"));
        let untraced = record(Kind::Tunnel, &uri, &close);
        assert!(!line(&Format::Text, &untraced).contains("trace_id"));
        assert!(!line(&Format::Json, &untraced).contains("trace_id"));
        assert_eq!(line(&template, &untraced), "00abcdef01234567 -\n");
    }

    fn line(format: &Format, record: &Record<'_>) -> String {
        let mut out = Vec::new();
        format.write(record, UNIX_EPOCH + Duration::new(1_796_290_642, 123_456_000), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_template_is_literal_text_and_named_fields() {
        let t = Template::parse("$client - [$time_clf] \"$method ${uri}\" $status $$5 ${backend}/$server").unwrap();
        assert_eq!(
            t.field_names(),
            ["client", "time_clf", "method", "uri", "status", "backend", "server"]
        );
        let uri = "/a?b=\"c\"";
        let close = "client closed";
        assert_eq!(
            line(&Format::Template(t), &record(Kind::Http, &uri, &close)),
            "127.0.0.1:5000 - [03/Dec/2026:09:37:22 +0000] \"GET /a?b=\\x22c\\x22\" 200 $5 web/s1\n"
        );
    }

    #[test]
    fn a_template_writes_a_dash_for_what_a_line_kind_lacks() {
        let t =
            Format::parse("$kind $method $status $messages_in $close_code_in $close_code_out $close $error").unwrap();
        let (uri, close) = ("/x", "client closed");
        assert_eq!(
            line(&t, &record(Kind::Tunnel, &uri, &close)),
            "tunnel - - 2 0 1000 client closed -\n"
        );
        assert_eq!(line(&t, &record(Kind::Http, &uri, &close)), "http GET 200 - - - - -\n");
    }

    #[test]
    fn unknown_fields_and_stray_dollars_are_refused_where_they_are() {
        let err = Template::parse("$client $statsu").unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(
            err.message.contains("unknown access-log field `$statsu`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("$status") && err.message.contains("$request_id"),
            "{}",
            err.message
        );
        assert_eq!(Template::parse("$client costs $ 5").unwrap_err().offset, 14);
        assert_eq!(Template::parse("ok ${client").unwrap_err().offset, 3);
        assert_eq!(Template::parse("${}").unwrap_err().offset, 0);
        assert_eq!(Template::parse("$Client").unwrap_err().offset, 0);
        assert_eq!(Template::parse("$client\n$status").unwrap_err().offset, 7);
        assert!(Template::parse("no fields at all")
            .unwrap_err()
            .message
            .contains("\"text\", \"json\""));
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn text_and_json_formats_are_the_keywords() {
        assert_eq!(Format::parse("text").unwrap(), Format::Text);
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        assert!(matches!(Format::parse("$status").unwrap(), Format::Template(_)));
        assert_eq!(Format::parse("$status").unwrap(), Format::parse("$status").unwrap());
    }

    #[test]
    fn text_lines_keep_todays_fields_and_quote_values_with_spaces() {
        let (uri, close) = ("/a b", "client closed");
        let mut http = record(Kind::Http, &uri, &close);
        http.error = Some("server said \"no\"");
        assert_eq!(
            line(&Format::Text, &http),
            "2026-12-03T09:37:22.123456Z  INFO tether::access: kind=http protocol=http/1.1 \
             request_id=00abcdef01234567 client=127.0.0.1:5000 frontend=public backend=web server=s1 \
             method=GET uri=\"/a b\" status=200 bytes_in=3 bytes_out=1234 duration_ms=12.345 \
             error=\"server said \\\"no\\\"\"\n"
        );
        assert_eq!(
            line(&Format::Text, &record(Kind::Tunnel, &uri, &close)),
            "2026-12-03T09:37:22.123456Z  INFO tether::access: kind=tunnel protocol=http/1.1 \
             request_id=00abcdef01234567 client=127.0.0.1:5000 frontend=public backend=web server=- \
             bytes_in=3 bytes_out=1234 messages_in=2 messages_out=5 close_code_in=0 close_code_out=1000 \
             duration_ms=12.345 close=\"client closed\"\n"
        );
    }

    #[test]
    fn json_lines_are_objects_with_todays_names_and_types() {
        let (uri, close) = ("/a\"\n", "client closed");
        let text = line(&Format::Json, &record(Kind::Http, &uri, &close));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["timestamp"], "2026-12-03T09:37:22.123456Z");
        assert_eq!(value["kind"], "http");
        assert_eq!(value["request_id"], "00abcdef01234567");
        assert_eq!(value["uri"], "/a\"\n");
        assert_eq!(value["status"], 200);
        assert_eq!(value["duration_ms"], 12.345);
        assert_eq!(value["error"], "-");
        assert_eq!(value["target"], "tether::access");
        assert!(value.get("messages_in").is_none());
        let tunnel: serde_json::Value =
            serde_json::from_str(&line(&Format::Json, &record(Kind::Tunnel, &uri, &close))).unwrap();
        assert_eq!(tunnel["close_code_in"], 0);
        assert_eq!(tunnel["close_code_out"], 1000);
        assert_eq!(tunnel["close"], "client closed");
        assert!(tunnel.get("status").is_none());
    }
}
