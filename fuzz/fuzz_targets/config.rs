//! The configuration loader, fed arbitrary text: it returns a config or an
//! error whose line and column lie inside the text (never a panic), and a
//! config it accepts builds a runtime snapshot, also as a reload of itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::config::{parse, ConfigError};
use tether::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, "fuzz.toml") {
        Ok(config) => {
            let first = Snapshot::build(&config, None);
            let _reloaded = Snapshot::build(&config, Some(&first));
        }
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "fuzz.toml");
            assert!(!message.is_empty(), "an error says what is wrong");
            let lines: Vec<&str> = text.split('\n').collect();
            assert!(line >= 1 && line <= lines.len(), "line {line} of {}", lines.len());
            let width = lines[line - 1].chars().count();
            assert!(
                column >= 1 && column <= width + 1,
                "column {column} of a {width}-character line"
            );
        }
        Err(other) => panic!("text cannot fail to be read: {other}"),
    }
});
