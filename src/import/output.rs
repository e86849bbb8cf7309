//! The importers' shared output: a tether configuration as sections of
//! keys, each key carrying the source lines it came from, and the TOML
//! writer that prints them with those lines as comments.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The result of an import: the TOML and what it could not express.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The tether configuration, with source comments and `# not translated:` lines.
    pub toml: String,
    /// Every directive that has no tether equivalent, once each, in file order.
    pub untranslated: Vec<Untranslated>,
}

/// One directive the importer could not express in tether.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    /// Its 1-based line.
    pub line: usize,
    /// The directive as written.
    pub directive: String,
    /// Why tether cannot express it (and what to do instead, where there is something).
    pub reason: String,
}

/// A source line: its number and its text (trimmed), quoted in comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    /// 1-based line number.
    pub line: usize,
    /// The directive as written (passwords redacted), quoted in the comment.
    pub text: String,
}

/// A TOML value, rendered by [`Value::render`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Str(String),
    Int(u64),
    Float(f64),
    Bool(bool),
    /// A list of strings.
    Strs(Vec<String>),
    /// Already rendered TOML (inline tables, lists of them).
    Raw(String),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Str(s) => quote(s),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => format!("{f:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Strs(list) => format!("[{}]", list.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")),
            Value::Raw(raw) => raw.clone(),
        }
    }
}

/// A TOML basic string with its escapes.
pub(super) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One line of a section: a key, or a comment about a directive.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// `key = value`, with the lines that decided it.
    Key {
        key: String,
        value: Value,
        from: Vec<Origin>,
        remark: Option<String>,
    },
    /// A directive tether does by itself: no key, a comment saying why.
    Builtin { from: Origin, why: String },
    /// A directive tether cannot express.
    NotTranslated { from: Origin, reason: String },
}

/// A TOML table (`[admin]`, `[[frontend]]`, …) with its keys and sub-tables.
#[derive(Debug, Clone, Default)]
pub(super) struct Section {
    /// The header, e.g. `[[backend]]`; empty for the top level.
    pub header: String,
    /// The line that opened it in the source (a section, a block).
    pub from: Option<Origin>,
    /// Its keys and comments, in the order they are printed.
    pub items: Vec<Item>,
    /// `[[frontend.route]]`, `[[backend.server]]`.
    pub children: Vec<Section>,
}

impl Section {
    /// A section with `header`, opened at `from`.
    pub fn new(header: &str, from: Option<Origin>) -> Self {
        Section {
            header: header.to_string(),
            from,
            ..Default::default()
        }
    }

    /// Sets `key` (replacing an earlier value, which a later directive overrides).
    pub fn set(&mut self, key: &str, value: Value, from: &Origin) {
        self.set_remarked(key, value, from, None);
    }

    /// Sets `key` with a remark explaining a difference the operator should know.
    pub fn set_remarked(&mut self, key: &str, value: Value, from: &Origin, remark: Option<String>) {
        for item in &mut self.items {
            if let Item::Key {
                key: k,
                value: v,
                from: f,
                remark: r,
            } = item
            {
                if k == key {
                    *v = value;
                    *f = vec![from.clone()];
                    *r = remark;
                    return;
                }
            }
        }
        self.items.push(Item::Key {
            key: key.to_string(),
            value,
            from: vec![from.clone()],
            remark,
        });
    }

    /// Records a directive tether handles by itself.
    pub fn builtin(&mut self, from: &Origin, why: &str) {
        self.items.push(Item::Builtin {
            from: from.clone(),
            why: why.to_string(),
        });
    }

    /// Records a directive tether cannot express.
    pub fn not_translated(&mut self, from: &Origin, reason: &str) {
        self.items.push(Item::NotTranslated {
            from: from.clone(),
            reason: reason.to_string(),
        });
    }
}

/// A whole tether configuration being built.
#[derive(Debug, Clone, Default)]
pub(super) struct Doc {
    /// Top-level keys (`workers`) and notes about global directives.
    pub top: Section,
    /// `[admin]`, from a stats listener.
    pub admin: Option<Section>,
    /// `[[frontend]]`s with their `[[frontend.route]]`s.
    pub frontends: Vec<Section>,
    /// `[[backend]]`s with their `[[backend.server]]`s.
    pub backends: Vec<Section>,
}

impl Doc {
    /// Leaves out backends left without a server tether can use (every one
    /// a backup, a socket path, …), and the routes and `default_backend`s
    /// naming them, each with a note: tether refuses a backend without servers.
    pub fn drop_empty_backends(&mut self) {
        let (empty, kept): (Vec<Section>, Vec<Section>) = std::mem::take(&mut self.backends)
            .into_iter()
            .partition(|b| b.children.is_empty());
        self.backends = kept;
        for backend in empty {
            let name = match backend.items.iter().find_map(|i| match i {
                Item::Key {
                    key,
                    value: Value::Str(v),
                    ..
                } if key == "name" => Some(v.clone()),
                _ => None,
            }) {
                Some(name) => name,
                None => continue,
            };
            let reason =
                format!("backend `{name}` has no server tether can use: it is left out, with what routes to it");
            for item in &backend.items {
                if let Item::NotTranslated { .. } = item {
                    self.top.items.push(item.clone());
                }
            }
            if let Some(from) = &backend.from {
                self.top.not_translated(from, &reason);
            }
            for frontend in &mut self.frontends {
                let mut notes = Vec::new();
                frontend.items.retain(|item| match item {
                    Item::Key {
                        key,
                        value: Value::Str(v),
                        from,
                        ..
                    } if key == "default_backend" && *v == name => {
                        notes.extend(from.iter().cloned());
                        false
                    }
                    _ => true,
                });
                frontend.children.retain(|route| {
                    let to_it = route.items.iter().any(
                        |i| matches!(i, Item::Key { key, value: Value::Str(v), .. } if key == "backend" && *v == name),
                    );
                    if to_it {
                        notes.extend(route.from.iter().cloned());
                    }
                    !to_it
                });
                for from in notes {
                    frontend.not_translated(&from, &reason);
                }
            }
        }
    }

    /// Prints the TOML (source comments naming `file:line`) and collects the
    /// untranslated directives, each once even when several sections inherited it.
    pub fn render(&self, file: &str, kind: &str) -> Translation {
        let mut out = String::new();
        let _ = writeln!(out, "# tether configuration imported from {kind} file {file}");
        let _ = writeln!(
            out,
            "# (each comment names the line it came from; check it with `tether check`)"
        );
        let mut writer = Writer {
            file,
            out,
            seen: BTreeSet::new(),
            untranslated: Vec::new(),
            last: None,
            last_remark: None,
        };
        writer.section(&self.top);
        if let Some(admin) = &self.admin {
            writer.section(admin);
        }
        for section in self.frontends.iter().chain(&self.backends) {
            writer.section(section);
        }
        let mut untranslated = writer.untranslated;
        untranslated.sort_by_key(|u| u.line);
        Translation {
            toml: writer.out,
            untranslated,
        }
    }
}

struct Writer<'a> {
    file: &'a str,
    out: String,
    /// Lines already reported as not translated (inherited `defaults` are reported once).
    seen: BTreeSet<(usize, String)>,
    untranslated: Vec<Untranslated>,
    /// The line the last source comment named: keys from one line share one comment.
    last: Option<usize>,
    /// The last `# note:` printed, so keys sharing one are not noted twice.
    last_remark: Option<String>,
}

impl Writer<'_> {
    fn section(&mut self, section: &Section) {
        if !section.header.is_empty() {
            self.out.push('\n');
            self.last = None;
            if let Some(from) = &section.from {
                self.origin(from);
            }
            let _ = writeln!(self.out, "{}", section.header);
        }
        for item in &section.items {
            match item {
                Item::Key {
                    key,
                    value,
                    from,
                    remark,
                } => {
                    for origin in from {
                        self.origin(origin);
                    }
                    if let Some(remark) = remark {
                        if self.last_remark.as_ref() != Some(remark) {
                            let _ = writeln!(self.out, "# note: {remark}");
                        }
                    }
                    self.last_remark = remark.clone();
                    let _ = writeln!(self.out, "{key} = {}", value.render());
                }
                Item::Builtin { from, why } => {
                    self.last = Some(from.line);
                    let _ = writeln!(
                        self.out,
                        "# {}:{}  {}  (built in: {why})",
                        self.file, from.line, from.text
                    );
                }
                Item::NotTranslated { from, reason } => {
                    self.last = None;
                    let _ = writeln!(
                        self.out,
                        "# not translated: {}:{}  {}  ({reason})",
                        self.file, from.line, from.text
                    );
                    if self.seen.insert((from.line, reason.clone())) {
                        self.untranslated.push(Untranslated {
                            line: from.line,
                            directive: from.text.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
        for child in &section.children {
            self.section(child);
        }
    }

    /// `# file:line  text`, unless the comment just above named the same line.
    fn origin(&mut self, origin: &Origin) {
        if self.last != Some(origin.line) {
            let _ = writeln!(self.out, "# {}:{}  {}", self.file, origin.line, origin.text);
            self.last = Some(origin.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_for_toml() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        let parsed: toml::Value = toml::from_str(&format!("k = {}", quote("x\u{1}\ny"))).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("x\u{1}\ny"));
    }

    #[test]
    fn a_later_directive_replaces_the_key_and_its_origin() {
        let first = Origin {
            line: 3,
            text: "timeout connect 5s".into(),
        };
        let second = Origin {
            line: 9,
            text: "timeout connect 1s".into(),
        };
        let mut doc = Doc::default();
        let mut backend = Section::new("[[backend]]", None);
        backend.set("timeouts.connect", Value::Str("5s".into()), &first);
        backend.set("timeouts.connect", Value::Str("1s".into()), &second);
        backend.not_translated(&first, "no equivalent");
        doc.backends.push(backend.clone());
        doc.backends.push(backend);
        let t = doc.render("h.cfg", "HAProxy");
        assert!(
            t.toml
                .contains("# h.cfg:9  timeout connect 1s\ntimeouts.connect = \"1s\""),
            "{}",
            t.toml
        );
        assert!(!t.toml.contains("h.cfg:3  timeout connect 5s\ntimeouts"), "{}", t.toml);
        assert_eq!(t.untranslated.len(), 1, "reported once though inherited twice");
    }
}
