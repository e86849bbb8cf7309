//! The CPU time other processes (the proxy under test) spend, read from
//! `/proc`, so the load generator can report the proxy's CPU per operation
//! over exactly its own measured window.
//!
//! Preferred source: the first field of `/proc/PID/task/TID/schedstat` (time
//! on a CPU in nanoseconds, user and system together) summed over every
//! thread. Where that file is missing (a kernel without `CONFIG_SCHED_INFO`)
//! `utime + stime` of `/proc/PID/stat` is used, in clock ticks (10 ms at
//! `CLK_TCK` 100), so a short window gives a coarse figure.

use std::time::Instant;

use serde_json::{json, Value};

/// Where a CPU figure was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/proc/PID/task/*/schedstat`, nanoseconds.
    Schedstat,
    /// `/proc/PID/stat` `utime + stime`, clock ticks.
    Stat,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Schedstat => "schedstat",
            Source::Stat => "stat",
        }
    }
}

/// The first field of a `schedstat` file: nanoseconds spent on a CPU.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `utime + stime` (clock ticks) of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces and `)`, so fields
/// are counted from the last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        // A thread that exits between the listing and the read is skipped.
        if let Some(ns) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t))
        {
            total += ns;
            any = true;
        }
    }
    any.then_some(total)
}

fn stat_ns(pid: u32) -> Option<u64> {
    let ticks = parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    Some(ticks * 1_000_000_000 / hz)
}

/// CPU time of `pids` summed, in nanoseconds, and where it came from; `None`
/// when `pids` is empty or one of them cannot be read (it exited).
pub fn cpu_ns(pids: &[u32]) -> Option<(u64, Source)> {
    if pids.is_empty() {
        return None;
    }
    if let Some(ns) = pids.iter().map(|&p| schedstat_ns(p)).sum::<Option<u64>>() {
        return Some((ns, Source::Schedstat));
    }
    let ns = pids.iter().map(|&p| stat_ns(p)).sum::<Option<u64>>()?;
    Some((ns, Source::Stat))
}

/// One reading of the processes' CPU time and the moment it was taken.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    ns: u64,
    source: Source,
    at: Instant,
}

impl Sample {
    /// Reads the CPU time of `pids` now (`None` as for [`cpu_ns`]).
    pub fn take(pids: &[u32]) -> Option<Sample> {
        let (ns, source) = cpu_ns(pids)?;
        Some(Sample {
            ns,
            source,
            at: Instant::now(),
        })
    }
}

/// The result-line fields for the CPU the processes spent between `start`
/// and `end`, taken around a measured window of `window_s` seconds (`None`:
/// the time between the samples) in which `ops` operations completed:
/// `proxy_cpu_us` (the delta, scaled to `window_s` when the samples were
/// taken a little early or late),
/// `proxy_cpu_us_per_op`, `proxy_cpu_share` (of one core) and
/// `proxy_cpu_source`. Empty when a sample is missing or nothing completed.
pub fn fields(
    start: Option<Sample>,
    end: Option<Sample>,
    window_s: Option<f64>,
    ops: u64,
) -> Vec<(&'static str, Value)> {
    let (Some(a), Some(b)) = (start, end) else {
        return Vec::new();
    };
    let sampled_s = b.at.duration_since(a.at).as_secs_f64();
    let window_s = window_s.unwrap_or(sampled_s);
    if ops == 0 || sampled_s <= 0.0 || window_s <= 0.0 || b.ns < a.ns || a.source != b.source {
        return Vec::new();
    }
    let share = (b.ns - a.ns) as f64 / 1e9 / sampled_s;
    let cpu_us = share * window_s * 1e6;
    vec![
        ("proxy_cpu_us", json!(cpu_us.round())),
        (
            "proxy_cpu_us_per_op",
            json!((cpu_us / ops as f64 * 100.0).round() / 100.0),
        ),
        ("proxy_cpu_share", json!((share * 1000.0).round() / 1000.0)),
        ("proxy_cpu_source", json!(a.source.name())),
    ]
}

/// Adds [`fields`] to a result object.
pub fn insert(result: &mut Value, start: Option<Sample>, end: Option<Sample>, window_s: Option<f64>, ops: u64) {
    if let Value::Object(map) = result {
        for (k, v) in fields(start, end, window_s, ops) {
            map.insert(k.into(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_first_field_is_nanoseconds() {
        assert_eq!(parse_schedstat("243583098 27186560 947\n"), Some(243_583_098));
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 52 7 0 0 20 0 3 0 99 1000 200 0";
        assert_eq!(parse_stat_ticks(line), Some(59));
        assert_eq!(parse_stat_ticks("4242 (x"), None);
    }

    #[test]
    fn own_cpu_grows_while_busy_and_is_divided_by_operations() {
        let me = [std::process::id()];
        let a = Sample::take(&me).expect("own CPU readable");
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let b = Sample::take(&me).expect("own CPU readable");
        assert!(b.ns > a.ns, "{a:?} {b:?}");
        let window = b.at.duration_since(a.at).as_secs_f64();
        let f: std::collections::HashMap<_, _> = fields(Some(a), Some(b), Some(window), 1000).into_iter().collect();
        let total = f["proxy_cpu_us"].as_f64().unwrap();
        let per_op = f["proxy_cpu_us_per_op"].as_f64().unwrap();
        assert!(total > 1_000.0, "{f:?}");
        assert!((per_op - total / 1000.0).abs() < 0.01, "{f:?}");
        assert!(fields(Some(a), None, None, 1000).is_empty());
        assert!(fields(Some(a), Some(b), None, 0).is_empty());
    }

    #[test]
    fn no_pids_no_figure() {
        assert!(cpu_ns(&[]).is_none());
    }
}
