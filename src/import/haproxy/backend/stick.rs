//! HAProxy `stick-table` and `stick` rules → tether's learned ids, where
//! they map: ids learned from responses, matched in requests.

use super::super::super::output::{quote, Value};
use super::super::super::{duration, size};
use super::super::Directive;
use super::Backend;

impl Backend {
    pub(super) fn stick(&mut self, d: &Directive) {
        let o = &d.origin;
        if d.words.iter().any(|w| w == "if" || w == "unless" || w == "table") {
            self.section
                .not_translated(o, "tether's learned ids have no conditions and one table per backend");
            return;
        }
        let expr = d.word(2);
        let arg = |prefixes: &[&str]| {
            prefixes.iter().find_map(|p| {
                expr.strip_prefix(p)
                    .and_then(|rest| rest.strip_suffix(')'))
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
            })
        };
        let request = if let Some(c) = arg(&["req.cook(", "cookie(", "cook("]) {
            Some(format!("{{ cookie = {} }}", quote(&c)))
        } else if let Some(p) = arg(&["url_param(", "urlp("]) {
            Some(format!("{{ url_param = {} }}", quote(&p)))
        } else {
            arg(&["req.hdr(", "hdr("]).map(|h| format!("{{ header = {} }}", quote(&h)))
        };
        let response = if let Some(c) = arg(&["res.cook(", "set-cookie(", "scook("]) {
            Some(("sticky.learn.response_cookie".to_string(), c))
        } else {
            arg(&["res.hdr(", "shdr("]).map(|h| ("sticky.learn.response_header".to_string(), h))
        };
        match (d.word(1), request, response) {
            ("on", Some(m), _) => {
                self.stick_match.push((m, o.clone()));
                self.stick_on.push(d.clone());
            }
            ("match", Some(m), _) => self.stick_match.push((m, o.clone())),
            ("store-response", _, Some((key, name))) => self.stick_learn.push((key, name, o.clone())),
            ("on" | "match" | "store-request", _, _) if expr == "src" => self.section.not_translated(
                o,
                "tether has no table of client addresses; `balance source` hashes them instead",
            ),
            _ => self.section.not_translated(
                o,
                "tether learns ids from server responses (res.cook, res.hdr) and matches them in cookies, query parameters or headers",
            ),
        }
    }

    pub(super) fn finish_stick(&mut self) {
        let table = self.stick_table.take();
        if self.stick_learn.is_empty() {
            for d in &self.stick_on {
                self.section.not_translated(
                    &d.origin,
                    "tether stores ids only from server responses: add `stick store-response res.cook(…)`",
                );
            }
            if let Some(t) = table {
                if !self.stick_match.is_empty() || self.stick_on.is_empty() {
                    self.section
                        .not_translated(&t.origin, "no `stick store-response` that tether can learn ids from");
                }
            }
            return;
        }
        if self.stick_match.is_empty() {
            for (_, _, origin) in &self.stick_learn {
                self.section
                    .not_translated(origin, "no `stick on`/`stick match` saying where requests carry the id");
            }
            return;
        }
        for (key, name, origin) in std::mem::take(&mut self.stick_learn) {
            self.section.set(&key, Value::Str(name), &origin);
        }
        let matches: Vec<String> = self.stick_match.iter().map(|(m, _)| m.clone()).collect();
        let origin = self.stick_match[0].1.clone();
        let remark = (!self.stick_on.is_empty())
            .then(|| "`stick on` also stores ids from requests; tether learns them only from responses".to_string());
        self.section.set_remarked(
            "sticky.match",
            Value::Raw(format!("[{}]", matches.join(", "))),
            &origin,
            remark,
        );
        if let Some(t) = table {
            let mut i = 1;
            while i + 1 < t.words.len() {
                let (k, v) = (t.word(i), t.word(i + 1));
                match k {
                    "expire" => match duration(v, "ms") {
                        Some(d) => self.section.set("sticky.idle_timeout", Value::Str(d), &t.origin),
                        None => self.section.not_translated(&t.origin, "`expire` is not a time"),
                    },
                    "size" => match size(v) {
                        Some(n) => self.section.set("sticky.max_entries", Value::Int(n), &t.origin),
                        None => self.section.not_translated(&t.origin, "`size` is not a number"),
                    },
                    "type" | "len" => {}
                    "peers" => self.section.not_translated(
                        &t.origin,
                        "`peers`: share learned ids between instances with [cluster] instead",
                    ),
                    other => self
                        .section
                        .not_translated(&t.origin, &format!("stick-table `{other}` has no tether equivalent")),
                }
                i += 2;
            }
        }
    }
}
