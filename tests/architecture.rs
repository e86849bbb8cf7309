//! The crate's layering, checked: every `crate::` path in `src/` goes from a
//! module to a module of a lower layer (see `LAYERS`), so the picture in
//! README's Layout table (and DESIGN.md's module table) stays true.
//!
//! It reads the source as text and uses only std: a small scanner blanks
//! comments, string and char literals and `#[cfg(test)]` code (keeping every
//! newline, so offsets keep their line numbers), then collects the `crate::`
//! paths that remain.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The crate's layers, lowest first. A module imports only from layers below
/// its own; two modules of one layer never import each other.
///
/// This table is the one source; README's Layout table repeats it. It
/// refines DESIGN.md's "Layers and modules" table: DESIGN's layer 0 is split
/// into `util` (below) and the other leaves (which use it), and its logic
/// layer into `route`/`balance` and then `sticky` (which uses `balance`), so
/// no two modules of one layer import each other.
const LAYERS: &[(u32, &[&str])] = &[
    // The one hash mixer, the lock helper, the clocks.
    (0, &["util"]),
    (
        1,
        &[
            "access_log",
            "cidr",
            "origin",
            "lookup",
            "proxy_header",
            "tls",
            "uring",
            "workers",
            "ws",
        ],
    ),
    // `telemetry` (W3C trace context, spans, the OTLP exporter) uses `tls`.
    (2, &["config", "telemetry"]),
    (3, &["state", "discovery", "dynamic"]),
    (4, &["route", "balance", "rebalance"]),
    (5, &["sticky"]),
    (6, &["health"]),
    (7, &["snapshot"]),
    (8, &["proxy", "cluster", "acme"]),
    (9, &["admin"]),
    (10, &["instance"]),
    (11, &["demo", "import", "lib", "main"]),
];

/// The module of the crate root (`src/lib.rs`): where `crate::Tether` and other
/// re-exports lead.
const LIB: &str = "lib";

/// The module of the binary (`src/main.rs`, `src/cli.rs`): the top layer, whose
/// `crate::` means the binary, so its paths are not checked.
const BINARY: &str = "main";

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn every_module_imports_only_from_layers_below_it() {
    let violations: Vec<String> = imports(&source_files()).iter().filter_map(layer_violation).collect();
    assert!(
        violations.is_empty(),
        "{} import(s) break the layering (LAYERS in tests/architecture.rs, README's Layout table):\n{}\n",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn every_module_is_in_the_layer_table() {
    let missing: Vec<String> = top_level_modules(&source_files())
        .into_iter()
        .filter(|(module, _)| layer_of(module).is_none())
        .map(|(module, place)| {
            format!(
                "module `{module}` ({place}) is not in the layer table: add it to LAYERS in tests/architecture.rs \
                 and to README's Layout table"
            )
        })
        .collect();
    assert!(missing.is_empty(), "{}\n", missing.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let imports = imports(&source_files());
    let graph = module_graph(&imports);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{}", describe_cycle(&cycle, &graph));
    }
}

// ---------------------------------------------------------------------------
// Source files and modules
// ---------------------------------------------------------------------------

/// One `.rs` file under `src/`.
struct SourceFile {
    /// The path from the crate root, with `/`: `src/balance/mod.rs`.
    path: String,
    /// The top-level module it belongs to (see `top_level_module`).
    module: String,
    /// Its text.
    text: String,
}

/// A `crate::` path from one top-level module to another.
struct Import {
    /// The file it is written in, from the crate root.
    file: String,
    /// Its line in that file, from 1.
    line: usize,
    /// The path as written (whitespace collapsed): `crate::state::ServerState`.
    path: String,
    /// The module of the file.
    from: String,
    /// The module the path leads to.
    to: String,
}

/// Every `.rs` file under `src/`, sorted by path.
fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut paths = rust_files_under(&src);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("a file under src/");
            SourceFile {
                path: format!("src/{}", slashed(relative)),
                module: top_level_module(relative),
                text: fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            }
        })
        .collect()
}

/// Every `.rs` file in `dir` and its subfolders.
fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files_under(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// `path` with `/` between its components, whatever the platform.
fn slashed(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// The top-level module of a file, from its path relative to `src/`:
/// `foo.rs` and `foo/**` → `foo`, `lib.rs` → `lib`, `main.rs` and `cli.rs` → `main`.
fn top_level_module(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a path under src/")
        .as_os_str()
        .to_string_lossy();
    match first.strip_suffix(".rs") {
        Some("main" | "cli") => BINARY.to_string(),
        Some(stem) => stem.to_string(),
        None => first.into_owned(),
    }
}

/// Every top-level module found under `src/`, with where it lives
/// (`src/foo.rs` or `src/foo/`; a module's first file names it).
fn top_level_modules(files: &[SourceFile]) -> BTreeMap<String, String> {
    let mut modules = BTreeMap::new();
    for file in files {
        let place = match file.path.strip_prefix("src/").and_then(|p| p.split_once('/')) {
            Some((folder, _)) => format!("src/{folder}/"),
            None => file.path.clone(),
        };
        modules.entry(file.module.clone()).or_insert(place);
    }
    modules
}

/// The layer of `module` in `LAYERS`, or `None` if it is not there.
fn layer_of(module: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(_, modules)| modules.contains(&module))
        .map(|&(layer, _)| layer)
}

/// Every `crate::` path from one module to another in the library's files (the
/// binary's files are skipped), in file and line order.
fn imports(files: &[SourceFile]) -> Vec<Import> {
    let known: BTreeSet<String> = top_level_modules(files)
        .into_keys()
        .filter(|m| m != LIB && m != BINARY)
        .collect();
    let mut imports = Vec::new();
    for file in files.iter().filter(|f| f.module != BINARY) {
        for reference in references_in(&file.text, &known) {
            if reference.module != file.module {
                imports.push(Import {
                    file: file.path.clone(),
                    line: reference.line,
                    path: reference.path,
                    from: file.module.clone(),
                    to: reference.module,
                });
            }
        }
    }
    imports
}

// ---------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------

/// How `import` breaks the layer rule, as one line of the report; `None` if it
/// keeps it, or if either module is missing from `LAYERS` (which
/// `every_module_is_in_the_layer_table` reports).
fn layer_violation(import: &Import) -> Option<String> {
    let (from, to) = (layer_of(&import.from)?, layer_of(&import.to)?);
    let at = format!("{}:{}: `{}`", import.file, import.line, import.path);
    let (a, b) = (&import.from, &import.to);
    if to == from {
        Some(format!(
            "{at} — modules `{a}` and `{b}` share layer {from}: siblings never import each other"
        ))
    } else if to > from {
        Some(format!(
            "{at} — module `{a}` (layer {from}) imports `{b}` (layer {to}): a module may import only from layers below its own"
        ))
    } else {
        None
    }
}

/// The module graph: each module, the modules it imports, and for each of
/// those the first import that makes the edge.
type Graph<'a> = BTreeMap<&'a str, BTreeMap<&'a str, &'a Import>>;

/// Builds the module graph from `imports` (which hold no self-references).
fn module_graph(imports: &[Import]) -> Graph<'_> {
    let mut graph = Graph::new();
    for import in imports {
        graph
            .entry(import.from.as_str())
            .or_default()
            .entry(import.to.as_str())
            .or_insert(import);
    }
    graph
}

/// One cycle of `graph`, as modules of which each imports the next and the
/// last imports the first; `None` if the graph has none.
fn find_cycle<'a>(graph: &Graph<'a>) -> Option<Vec<&'a str>> {
    let mut done = BTreeSet::new();
    let mut path = Vec::new();
    graph
        .keys()
        .find_map(|&start| cycle_through(start, graph, &mut path, &mut done))
}

/// Depth-first search from `module`, with `path` the modules being visited:
/// the first cycle reached, if any. `done` holds modules from which none is.
fn cycle_through<'a>(
    module: &'a str,
    graph: &Graph<'a>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<&'a str>> {
    if let Some(at) = path.iter().position(|&m| m == module) {
        return Some(path[at..].to_vec());
    }
    if done.contains(module) {
        return None;
    }
    path.push(module);
    let next = graph.get(module).into_iter().flat_map(|edges| edges.keys());
    let found = next.copied().find_map(|next| cycle_through(next, graph, path, done));
    path.pop();
    done.insert(module);
    found
}

/// The failure message for `cycle`: the loop, then the import behind each edge.
fn describe_cycle(cycle: &[&str], graph: &Graph<'_>) -> String {
    let mut modules = cycle.to_vec();
    modules.push(cycle[0]);
    let mut message = format!("the module graph has a cycle: {}\n", modules.join(" -> "));
    for pair in modules.windows(2) {
        let import = graph[pair[0]][pair[1]];
        message += &format!(
            "  {} -> {}: {}:{}: `{}`\n",
            pair[0], pair[1], import.file, import.line, import.path
        );
    }
    message
}

// ---------------------------------------------------------------------------
// The scanner
// ---------------------------------------------------------------------------

/// One `crate::` path found in a file.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    /// Its line, from 1.
    line: usize,
    /// The path as written, whitespace collapsed; a grouped import
    /// `use crate::{a, b::c}` gives one path per member: `crate::a`, `crate::b::c`.
    path: String,
    /// The top-level module it leads to: its first segment if that is one of
    /// the known modules, else `lib` (a re-export such as `crate::Tether`).
    module: String,
}

/// Every `crate::` path of `source` outside comments, literals and
/// `#[cfg(test)]` code; `known` holds the crate's top-level module names.
fn references_in(source: &str, known: &BTreeSet<String>) -> Vec<Reference> {
    let code = blank_test_code(&blank_comments_and_literals(source));
    crate_paths(&code)
        .into_iter()
        .map(|(offset, path)| {
            let first = path
                .trim_start_matches("crate::")
                .split(|c: char| !is_ident(c as u8))
                .next();
            let module = first.filter(|m| known.contains(*m)).unwrap_or(LIB).to_string();
            Reference {
                line: line_of(&code, offset),
                path,
                module,
            }
        })
        .collect()
}

/// `source` with comments, string literals and char literals replaced by
/// spaces; newlines are kept, so every offset stays on its line.
fn blank_comments_and_literals(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        match comment_or_literal_end(bytes, i) {
            Some(end) => {
                blank(&mut out, i, end);
                i = end;
            }
            None => i += 1,
        }
    }
    String::from_utf8(out).expect("only whole characters are blanked")
}

/// If a comment or a string or char literal starts at `i`, the offset just past it.
fn comment_or_literal_end(bytes: &[u8], i: usize) -> Option<usize> {
    let rest = &bytes[i..];
    if rest.starts_with(b"//") {
        Some(rest.iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n))
    } else if rest.starts_with(b"/*") {
        Some(block_comment_end(bytes, i))
    } else if rest[0] == b'"' {
        Some(string_end(bytes, i))
    } else if rest[0] == b'\'' {
        char_literal_end(bytes, i)
    } else if rest[0] == b'r' {
        raw_string_end(bytes, i)
    } else {
        None
    }
}

/// The offset past the block comment opening at `i` (block comments nest).
fn block_comment_end(bytes: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < bytes.len() {
        if bytes[j..].starts_with(b"/*") {
            depth += 1;
            j += 2;
        } else if bytes[j..].starts_with(b"*/") {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    bytes.len()
}

/// The offset past the string opening with the `"` at `i` (`b"…"` and `c"…"`
/// too: their prefix is left as a stray letter).
fn string_end(bytes: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

/// If the `'` at `i` opens a char literal (`'x'`, `'\n'`, `'\u{2014}'`, `b'x'`),
/// the offset past it; `None` for a lifetime or a label (`'a`, `'static`).
fn char_literal_end(bytes: &[u8], i: usize) -> Option<usize> {
    let next = *bytes.get(i + 1)?;
    if next == b'\\' {
        let close = bytes.get(i + 3..)?.iter().position(|&b| b == b'\'')?;
        return Some(i + 3 + close + 1);
    }
    let close = i + 1 + utf8_len(next);
    (bytes.get(close) == Some(&b'\'')).then_some(close + 1)
}

/// If a raw string (`r"…"`, `r#"…"#`, `br#"…"#`) starts with the `r` at `i`, the offset past it.
fn raw_string_end(bytes: &[u8], i: usize) -> Option<usize> {
    let before = &bytes[..i];
    let prefix_ok = match before.last() {
        Some(b'b' | b'c') => !before.iter().nth_back(1).is_some_and(|&b| is_ident(b)),
        Some(&b) => !is_ident(b),
        None => true,
    };
    let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
    let open = i + 1 + hashes;
    if !prefix_ok || bytes.get(open) != Some(&b'"') {
        return None;
    }
    let closing: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
    let body = &bytes[open + 1..];
    let end = body.windows(closing.len()).position(|w| w == closing.as_slice());
    Some(end.map_or(bytes.len(), |n| open + 1 + n + closing.len()))
}

/// The length in bytes of the UTF-8 character whose first byte is `lead`.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// `code` (already without comments and literals) with every item under
/// `#[cfg(test)]` blanked, attribute included; all of it under `#![cfg(test)]`.
fn blank_test_code(code: &str) -> String {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    if code.contains("#![cfg(test)]") {
        return code.replace(|c: char| c != '\n', " ");
    }
    let mut out = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = code[from..].find(ATTRIBUTE) {
        let start = from + found;
        let end = item_end(code.as_bytes(), start + ATTRIBUTE.len());
        blank(&mut out, start, end);
        from = end;
    }
    String::from_utf8(out).expect("only ASCII is blanked")
}

/// The offset past the item starting at `i` (with any further attributes):
/// its `;` outside brackets, or the `}` that closes its first outer `{`.
fn item_end(bytes: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    for (j, &b) in bytes.iter().enumerate().skip(i) {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' => depth = depth.saturating_sub(1),
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            b';' if depth == 0 => return j + 1,
            _ => {}
        }
    }
    bytes.len()
}

/// Replaces `out[start..end]` with spaces, keeping newlines.
fn blank(out: &mut [u8], start: usize, end: usize) {
    for b in &mut out[start..end] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
}

/// Every `crate::` path in `code` (already blanked), with its offset: one per
/// member of a grouped import, none for a visibility such as `pub(in crate::x)`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate") {
        let starts_word = at == 0 || !is_ident(bytes[at - 1]);
        let after = at + "crate".len();
        if !starts_word || !bytes[after..].starts_with(b"::") || is_visibility(bytes, at) {
            continue;
        }
        let rest = after + 2;
        if bytes.get(rest) == Some(&b'{') {
            for (offset, member) in group_members(code, rest) {
                paths.push((offset, format!("crate::{member}")));
            }
        } else {
            paths.push((at, format!("crate::{}", path_at(code, rest).0)));
        }
    }
    paths
}

/// Whether the `crate` at `at` is the path of a visibility: `pub(in crate::x)`.
fn is_visibility(bytes: &[u8], at: usize) -> bool {
    let before = bytes[..at].trim_ascii_end();
    before
        .strip_suffix(b"in")
        .is_some_and(|b| b.trim_ascii_end().ends_with(b"("))
}

/// The members of the group `{…}` opening at `open`, each with its offset:
/// `{a, b::c, d::{e, f}}` gives `a`, `b::c`, `d::{e, f}`.
fn group_members(code: &str, open: usize) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let mut members = Vec::new();
    let mut j = open + 1;
    while j < bytes.len() && bytes[j] != b'}' {
        if bytes[j].is_ascii_whitespace() || bytes[j] == b',' {
            j += 1;
            continue;
        }
        let (member, end) = path_at(code, j);
        members.push((j, member));
        j = end.max(j + 1);
    }
    members
}

/// The path starting at `i`: segments joined by `::`, ending with an
/// identifier, a group `{…}` or `*`; with the offset past it. Whitespace in a
/// group is collapsed.
fn path_at(code: &str, i: usize) -> (String, usize) {
    let bytes = code.as_bytes();
    let mut j = i;
    loop {
        while j < bytes.len() && is_ident(bytes[j]) {
            j += 1;
        }
        if !bytes[j..].starts_with(b"::") {
            break;
        }
        match bytes.get(j + 2) {
            Some(&b) if is_ident(b) => j += 2,
            Some(b'*') => {
                j += 3;
                break;
            }
            Some(b'{') => {
                j = item_end(bytes, j + 2);
                break;
            }
            _ => break,
        }
    }
    (collapse_whitespace(&code[i..j]), j)
}

/// `text` on one line: `{\n    a,\n    b,\n}` becomes `{a, b}`.
fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("{ ", "{")
        .replace(" }", "}")
        .replace(",}", "}")
}

/// Whether `b` can be part of an identifier.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The line (from 1) of `offset` in `code`.
fn line_of(code: &str, offset: usize) -> usize {
    code.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

// ---------------------------------------------------------------------------
// The scanner's own tests
// ---------------------------------------------------------------------------

/// The references in `source` as (line, path, module), with modules `a` to `z`
/// (single letters) known.
fn scan(source: &str) -> Vec<(usize, String, String)> {
    let known: BTreeSet<String> = ('a'..='z').map(String::from).collect();
    references_in(source, &known)
        .into_iter()
        .map(|r| (r.line, r.path, r.module))
        .collect()
}

/// `(line, path, module)` with owned strings, for comparing with `scan`.
fn found(line: usize, path: &str, module: &str) -> (usize, String, String) {
    (line, path.to_string(), module.to_string())
}

#[test]
fn scanner_reads_each_member_of_a_grouped_import() {
    let source = "use crate::{a, b::c, d::{e, f}};\nuse crate::{\n    g::H,\n    i::{self, J},\n};\n";
    assert_eq!(
        scan(source),
        vec![
            found(1, "crate::a", "a"),
            found(1, "crate::b::c", "b"),
            found(1, "crate::d::{e, f}", "d"),
            found(3, "crate::g::H", "g"),
            found(4, "crate::i::{self, J}", "i"),
        ]
    );
}

#[test]
fn scanner_finds_paths_in_types_calls_and_globs() {
    let source = "fn f(x: crate::x::Y) -> Vec<crate::z::W> {\n    crate::y::go::<u8>(x);\n}\nuse crate::v::*;\n";
    assert_eq!(
        scan(source),
        vec![
            found(1, "crate::x::Y", "x"),
            found(1, "crate::z::W", "z"),
            found(2, "crate::y::go", "y"),
            found(4, "crate::v::*", "v"),
        ]
    );
}

#[test]
fn scanner_counts_re_exports_and_unknown_names_as_lib() {
    let source = "let t: crate::Tether = crate::start();\nuse crate::{self, Handle};\nuse crate::zz::Q;\n";
    assert_eq!(
        scan(source),
        vec![
            found(1, "crate::Tether", "lib"),
            found(1, "crate::start", "lib"),
            found(2, "crate::self", "lib"),
            found(2, "crate::Handle", "lib"),
            found(3, "crate::zz::Q", "lib"),
        ]
    );
}

#[test]
fn scanner_ignores_comments() {
    let source = "//! See [`crate::a`].\n/// Uses [`crate::b::X`].\n// crate::c::f()\n\
                  /* crate::d /* nested crate::e */ still crate::f */ use crate::g::G;\n";
    assert_eq!(scan(source), vec![found(4, "crate::g::G", "g")]);
}

#[test]
fn scanner_ignores_string_and_char_literals_but_not_lifetimes() {
    let source = concat!(
        "let s = \"crate::a \\\" crate::b\";\n",
        "let r = r\"crate::c\"; let h = r#\"crate::d \"quoted\" \"#; let b = br#\"crate::e\"#;\n",
        "let q = '\"'; let e = '\\''; let u = '\\u{2014}'; let x = b'x'; crate::f::go();\n",
        "fn g<'a>(x: &'a crate::g::G, y: &'static str) -> &'a str { 'outer: loop {} }\n",
        "#[doc = \"crate::h\"] struct S;\n",
    );
    assert_eq!(
        scan(source),
        vec![found(3, "crate::f::go", "f"), found(4, "crate::g::G", "g")]
    );
}

#[test]
fn scanner_removes_cfg_test_modules_and_items() {
    let source = "#[cfg(test)]\nmod tests {\n    use crate::a;\n    fn f() { crate::b::go(); }\n}\n\
                  #[cfg(test)]\nuse crate::c::{C, D};\n\
                  #[cfg(test)]\n#[allow(dead_code)]\nfn helper(x: [u8; 2]) -> crate::d::D { todo!() }\n\
                  use crate::e::E;\n";
    assert_eq!(scan(source), vec![found(11, "crate::e::E", "e")]);
}

#[test]
fn scanner_ignores_visibility_paths() {
    let source = "pub(in crate::a) fn f() {}\npub(crate) struct S;\npub( in  crate::b ) use crate::c::X;\n";
    assert_eq!(scan(source), vec![found(3, "crate::c::X", "c")]);
}

#[test]
fn scanner_reports_the_line_in_the_original_file() {
    let source = concat!(
        "/* one\n   two */\n",
        "const P: &str = r#\"\nthree\n\"#;\n",
        "// six\n",
        "use crate::a::A;\n",
        "use crate::{\n    b::B,\n\n    c::{\n        C,\n    },\n};\n",
        "fn f() {\n    let x = crate::d::make();\n}\n",
    );
    assert_eq!(
        scan(source),
        vec![
            found(7, "crate::a::A", "a"),
            found(9, "crate::b::B", "b"),
            found(11, "crate::c::{C}", "c"),
            found(16, "crate::d::make", "d"),
        ]
    );
}

#[test]
fn top_level_modules_follow_the_file_layout() {
    let module = |path: &str| top_level_module(Path::new(path));
    assert_eq!(module("state.rs"), "state");
    assert_eq!(module("balance/mod.rs"), "balance");
    assert_eq!(module("proxy/sub/deep.rs"), "proxy");
    assert_eq!(module("lib.rs"), "lib");
    assert_eq!(module("main.rs"), "main");
    assert_eq!(module("cli.rs"), "main");
}
