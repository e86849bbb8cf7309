//! `[log] access` and `log_format`: where access-log lines go and how they
//! are written, with errors that point into the template.

use std::path::Path;

use toml::Spanned;

use super::error::{ConfigError, SourceMap};
use crate::access_log::{Destination, Format};

/// `log_format`: `"text"`, `"json"` or a template; a bad template is
/// refused at the line and column of the offending `$`.
pub(super) fn format(value: &Spanned<String>, source: &SourceMap<'_>) -> Result<Format, ConfigError> {
    Format::parse(value.get_ref()).map_err(|err| {
        let at = source_offset(source, value, err.offset);
        source.error(Some(at..at), format!("`log_format`: {}", err.message))
    })
}

/// The offset in the file of byte `offset` of the string `value` (escapes
/// in the TOML string shift positions: the offending text is found again
/// in the raw literal, else the string's start is used).
fn source_offset(source: &SourceMap<'_>, value: &Spanned<String>, offset: usize) -> usize {
    let span = value.span();
    let decoded = value.get_ref();
    let token_len = decoded[offset..]
        .char_indices()
        .skip(1)
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '{'))
        .map_or(decoded.len() - offset, |(i, _)| i);
    let token = &decoded[offset..offset + token_len];
    if token.is_empty() {
        return span.start;
    }
    let before = decoded[..offset].matches(token).count();
    let raw = source.slice(span.clone());
    raw.match_indices(token)
        .nth(before)
        .map_or(span.start, |(i, _)| span.start + i)
}

/// `access`: `"stderr"`, `"stdout"`, `"off"` or a file (relative to the
/// configuration's folder, which must hold the file's folder).
pub(super) fn destination(
    value: &Spanned<String>,
    source: &SourceMap<'_>,
    base: &Path,
) -> Result<Destination, ConfigError> {
    Ok(match value.get_ref().as_str() {
        "stderr" => Destination::Stderr,
        "stdout" => Destination::Stdout,
        "off" => Destination::Off,
        "" => {
            return Err(source.error(
                Some(value.span()),
                "`access` is \"stderr\", \"stdout\", \"off\" or a file's path, like \"/var/log/tether/access.log\"",
            ))
        }
        file => {
            let path = base.join(file);
            let folder = match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() => folder.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            if !folder.is_dir() {
                return Err(source.error(
                    Some(value.span()),
                    format!(
                        "the folder of the access log ({}) does not exist: create it (tether appends to the file there)",
                        folder.display()
                    ),
                ));
            }
            if path.is_dir() {
                return Err(source.error(
                    Some(value.span()),
                    format!(
                        "`access` {} is a folder: name a file in it, like access.log",
                        path.display()
                    ),
                ));
            }
            Destination::File(path)
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse as load_str, ConfigError};

    const GOOD: &str = "[[frontend]]\nname = \"f\"\nbind = [\"127.0.0.1:0\"]\ndefault_backend = \"b\"\n\n\
                        [[backend]]\nname = \"b\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:1\"\n";

    fn refused(log: &str) -> (usize, usize, String) {
        ConfigError::invalid_at(load_str(&format!("{log}\n{GOOD}"), "t.toml"))
    }

    #[test]
    fn an_unknown_field_is_refused_at_its_dollar_even_after_escapes() {
        let (line, column, message) = refused("[log]\nlog_format = \"\\\"$method\\\" $stauts $status\"");
        assert_eq!((line, column), (2, 27), "{message}");
        assert!(
            message.contains("`$stauts`") && message.contains("$duration_ms"),
            "{message}"
        );
        let (line, column, _) = refused("[log]\n\nlog_format = '$client $client $nope'");
        assert_eq!((line, column), (3, 31));
    }

    #[test]
    fn formats_and_destinations_are_read() {
        use crate::access_log::{Destination, Format};
        let config = load_str(
            &format!("[log]\nlog_format = \"json\"\naccess = \"off\"\n{GOOD}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(config.log.format, Some(Format::Json));
        assert_eq!(config.log.access, Some(Destination::Off));
        let config = load_str(GOOD, "t.toml").unwrap();
        assert_eq!((config.log.format, config.log.access), (None, None));
        let (line, _, message) = refused("[log]\naccess = \"/no/such/folder/access.log\"");
        assert_eq!(line, 2);
        assert!(message.contains("does not exist"), "{message}");
    }
}
