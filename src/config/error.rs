//! Configuration errors that point at the file, line and column to fix.

use std::ops::Range;
use std::path::PathBuf;

/// Why a configuration could not be used. Every variant names the file; the
/// ones found in its text also name the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, has an unknown key, a bad value, or breaks a rule.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or a name such as `<demo>` for built-in configurations).
        file: String,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// Turns byte offsets in one source text into `ConfigError`s with line and column.
pub(crate) struct SourceMap<'a> {
    file: &'a str,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Self { file, text }
    }

    /// The text of `span` (empty when out of range).
    pub(crate) fn slice(&self, span: Range<usize>) -> &'a str {
        self.text.get(span).unwrap_or("")
    }

    /// An error located at the start of `span` (the whole file when `None`).
    pub(crate) fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

#[cfg(test)]
impl ConfigError {
    /// Line, column and message of the `Invalid` error `result` holds (for
    /// the unit tests of the config's parts; anything else fails the test).
    pub(crate) fn invalid_at<T: std::fmt::Debug>(result: Result<T, ConfigError>) -> (usize, usize, String) {
        match result {
            Err(ConfigError::Invalid {
                line, column, message, ..
            }) => (line, column, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }
}
