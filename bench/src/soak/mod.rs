//! The soak run ("nothing is lost"): the real tether binary under steady
//! WebSocket traffic while it is reloaded, loses a server, loses Redis and is
//! attacked by slowloris. Every phase reports its figures and PASS/FAIL
//! against its targets. Everything runs on 127.0.0.1.

pub mod admin;
pub mod checked;
pub mod phases;
pub mod procs;
pub mod slowloris;

use std::fmt::Write as _;

/// One figure of a phase: its value, the target, and whether it was met
/// (`None`: reported for information, no target).
#[derive(Debug, Clone)]
pub struct Row {
    /// What is measured.
    pub figure: String,
    /// What was measured.
    pub value: String,
    /// What it must be.
    pub target: String,
    /// Whether it is.
    pub pass: Option<bool>,
}

/// The result of one phase.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// The phase's name (`reload`, `kill`, `redis`, `slowloris`).
    pub name: String,
    /// What it ran (scale, duration).
    pub summary: String,
    /// Its figures.
    pub rows: Vec<Row>,
    /// Failure samples and other remarks.
    pub notes: Vec<String>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
}

impl PhaseReport {
    /// An empty report for `name`.
    pub fn new(name: &str) -> Self {
        PhaseReport {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a figure with a target.
    pub fn check(&mut self, figure: &str, value: impl ToString, target: &str, pass: bool) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: value.to_string(),
            target: target.to_owned(),
            pass: Some(pass),
        });
    }

    /// Adds a figure without a target.
    pub fn info(&mut self, figure: &str, value: impl ToString) {
        self.rows.push(Row {
            figure: figure.to_owned(),
            value: value.to_string(),
            target: String::new(),
            pass: None,
        });
    }

    /// Whether every target was met (a skipped phase passes).
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass != Some(false))
    }

    /// PASS, FAIL or SKIP.
    pub fn verdict(&self) -> &'static str {
        if self.skipped.is_some() {
            "SKIP"
        } else if self.passed() {
            "PASS"
        } else {
            "FAIL"
        }
    }

    /// The phase as a markdown section: a heading with the verdict, the table, the notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}: {} — {}", self.name, self.verdict(), self.summary);
        if let Some(why) = &self.skipped {
            let _ = writeln!(out, "\nskipped: {why}");
            return out;
        }
        let _ = writeln!(out, "\n| figure | value | target | |\n|---|---|---|---|");
        for r in &self.rows {
            let mark = match r.pass {
                Some(true) => "PASS",
                Some(false) => "**FAIL**",
                None => "",
            };
            let _ = writeln!(out, "| {} | {} | {} | {} |", r.figure, r.value, r.target, mark);
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}
