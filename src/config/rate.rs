//! Rates in the config file: `"20/s"`, `"600/m"`, `"10000/h"`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A number of events per period, read from a string such as `"20/s"`.
///
/// Parsed during deserialisation so a bad value is reported by the TOML
/// parser itself, with the line and column of the offending string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigRate {
    /// Events allowed per `per` (also the burst a client may use at once).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Parses `"<count>/<unit>"` with unit `s`, `m` or `h`.
pub fn parse_rate(text: &str) -> Result<ConfigRate, String> {
    let hint = "write it as \"20/s\", \"600/m\" or \"10000/h\"";
    let (count, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate: {hint}"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` must start with a whole number: {hint}"))?;
    if count == 0 {
        return Err(format!("`{text}` allows nothing: use a count of at least 1"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("`{text}` has an unknown unit `{other}`: {hint}")),
    };
    Ok(ConfigRate { count, per })
}

impl<'de> Deserialize<'de> for ConfigRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = ConfigRate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate string such as \"20/s\" or \"600/m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_rate(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(RateVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_period() {
        assert_eq!(
            parse_rate("20/s").unwrap(),
            ConfigRate {
                count: 20,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(parse_rate(" 600 / m ").unwrap().per, Duration::from_secs(60));
        assert_eq!(parse_rate("5/h").unwrap().count, 5);
    }

    #[test]
    fn bad_rates_say_how_to_write_one() {
        for bad in ["20", "x/s", "20/d", "0/s", "-1/s"] {
            let err = parse_rate(bad).unwrap_err();
            assert!(err.contains(bad.trim()), "{err}");
        }
    }
}
