//! The wall clock as access-log text: RFC 3339 in UTC to the microsecond
//! (`2026-12-03T09:37:22.123456Z`, as today's lines) and the Common Log
//! Format's `03/Dec/2026:09:37:22 +0000` (NGINX's `$time_local`, in UTC).
//! Pure integer arithmetic, no allocation, no time-zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// A moment broken into calendar fields (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year (four digits until 9999).
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–59.
    pub second: u32,
    /// Microseconds within the second.
    pub micros: u32,
}

impl Civil {
    /// `time` in UTC (the epoch for a clock set before 1970).
    pub fn of(time: SystemTime) -> Civil {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() as i64;
        let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
            micros: since.subsec_micros(),
        }
    }

    /// Appends `2026-12-03T09:37:22.123456Z`.
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        digits(out, self.year.clamp(0, 9999) as u32, 4);
        out.push(b'-');
        digits(out, self.month, 2);
        out.push(b'-');
        digits(out, self.day, 2);
        out.push(b'T');
        digits(out, self.hour, 2);
        out.push(b':');
        digits(out, self.minute, 2);
        out.push(b':');
        digits(out, self.second, 2);
        out.push(b'.');
        digits(out, self.micros, 6);
        out.push(b'Z');
    }

    /// Appends `03/Dec/2026:09:37:22 +0000`.
    pub fn write_clf(&self, out: &mut Vec<u8>) {
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
        ];
        digits(out, self.day, 2);
        out.push(b'/');
        out.extend_from_slice(MONTHS[(self.month.clamp(1, 12) - 1) as usize]);
        out.push(b'/');
        digits(out, self.year.clamp(0, 9999) as u32, 4);
        out.push(b':');
        digits(out, self.hour, 2);
        out.push(b':');
        digits(out, self.minute, 2);
        out.push(b':');
        digits(out, self.second, 2);
        out.extend_from_slice(b" +0000");
    }
}

/// `value` in exactly `width` decimal digits (zero-padded; higher digits cut).
fn digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Year, month and day of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, exact over the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(secs: u64, micros: u32, clf: bool) -> String {
        let civil = Civil::of(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into()));
        let mut out = Vec::new();
        if clf {
            civil.write_clf(&mut out);
        } else {
            civil.write_rfc3339(&mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn moments_are_written_in_utc_to_the_microsecond() {
        assert_eq!(text(0, 0, false), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29 (a leap day) 23:59:59.999999.
        assert_eq!(text(1_709_251_199, 999_999, false), "2024-02-29T23:59:59.999999Z");
        assert_eq!(text(1_796_290_642, 123_456, false), "2026-12-03T09:37:22.123456Z");
        assert_eq!(text(1_796_290_642, 0, true), "03/Dec/2026:09:37:22 +0000");
        assert_eq!(text(951_782_400, 7, false), "2000-02-29T00:00:00.000007Z");
    }
}
