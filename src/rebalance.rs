//! Rebalancing decisions, pure: which servers are over their share after
//! the server set changed, how many tunnels each instance sheds from them
//! this round, within the rate budget, and which tunnels (the oldest past
//! `settle`, never one whose client rebalancing already moved).
//!
//! A round starts when a ready server holds more than `max_skew` × the
//! mean of the backend's ready servers (the whole cluster's counts), once
//! the set has been stable for `settle`; it then sheds servers down to the
//! mean (rounded up), not merely back under the skew, so one scale-out
//! moves each client at most once and the spread ends even. The round ends
//! when no ready server holds more than the mean.
//!
//! The instance's rebalance loop reads the counts, asks these functions,
//! and does what they say (see `instance::rebalance`).

use std::time::Duration;

use crate::config::ConfigRate;

/// What one round knows of one server of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerLoad {
    /// Up, ready, weighted, not leaving: it takes part in the mean.
    pub ready: bool,
    /// Its connections through this instance, not counting tunnels already asked to close.
    pub local: u32,
    /// Its connections through the other instances of a cluster (last sync).
    pub remote: u32,
    /// Local tunnels that may be shed: older than `settle`, not moved here
    /// by rebalancing, not closing already.
    pub sheddable: u32,
}

impl ServerLoad {
    /// Connections over the cluster.
    fn total(&self) -> u32 {
        self.local.saturating_add(self.remote)
    }
}

/// The decision of one round for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// Shedding is on: a server went above the skew (or a round in
    /// progress has servers above the mean) and the set has settled.
    pub active: bool,
    /// The most connections a server may hold now over the cluster: the
    /// mean (rounded up) during a round, `max_skew` × the mean otherwise;
    /// `u32::MAX` with fewer than two ready servers.
    pub target_max: u32,
    /// Indices of ready servers holding more than `target_max`.
    pub over: Vec<usize>,
    /// Per server (same order as the input), how many local tunnels this
    /// instance would shed, before the rate budget: its share of the
    /// server's excess in proportion to its share of the server's connections.
    pub want: Vec<u32>,
}

/// Decides a round from the servers' loads. `settled`: the ready set has
/// not changed for `settle`; `was_active`: the previous round was shedding.
pub fn plan(loads: &[ServerLoad], max_skew: f64, settled: bool, was_active: bool) -> Round {
    let mut round = Round {
        active: false,
        target_max: u32::MAX,
        over: Vec::new(),
        want: vec![0; loads.len()],
    };
    let ready: Vec<usize> = (0..loads.len()).filter(|&i| loads[i].ready).collect();
    if ready.len() < 2 {
        return round;
    }
    let sum: u64 = ready.iter().map(|&i| u64::from(loads[i].total())).sum();
    let mean = sum as f64 / ready.len() as f64;
    let skew_limit = max_skew * mean;
    let fair = mean.ceil() as u32;
    let above = |limit: f64| ready.iter().any(|&i| f64::from(loads[i].total()) > limit);
    round.active = settled && (above(skew_limit) || (was_active && above(f64::from(fair))));
    round.target_max = if round.active {
        fair
    } else {
        skew_limit.floor().min(f64::from(u32::MAX)) as u32
    };
    round.over = ready
        .iter()
        .copied()
        .filter(|&i| loads[i].total() > round.target_max)
        .collect();
    if round.active {
        for &i in &round.over {
            let load = loads[i];
            round.want[i] = local_share(load, round.target_max).min(load.sheddable);
        }
    }
    round
}

/// This instance's part of a server's surplus over `target_max`: in
/// proportion to the connections it holds there, rounded down so the
/// instances' parts never add up to more than the surplus; a last one or
/// two go to an instance holding more than half of the server's connections.
fn local_share(load: ServerLoad, target_max: u32) -> u32 {
    let total = u64::from(load.total());
    let local = u64::from(load.local);
    let excess = total.saturating_sub(u64::from(target_max));
    let share = (excess * local).checked_div(total).unwrap_or(0);
    let share = if share == 0 && excess > 0 && local * 2 > total {
        1
    } else {
        share
    };
    share.min(local) as u32
}

/// Shares `budget` sheds among the servers' `want`s, one at a time to the
/// server with the most still wanted, so an over-full server is not left
/// waiting while another one empties first.
pub fn allocate(want: &[u32], budget: u32) -> Vec<u32> {
    let mut given = vec![0u32; want.len()];
    for _ in 0..budget {
        let next = (0..want.len())
            .filter(|&i| given[i] < want[i])
            .max_by_key(|&i| (want[i] - given[i], std::cmp::Reverse(i)));
        match next {
            Some(i) => given[i] += 1,
            None => break,
        }
    }
    given
}

/// One tunnel as the choice of which to shed sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelAge {
    /// When it opened (`monotonic_ms`).
    pub opened_ms: u64,
    /// Rebalancing moved its client here: never shed again.
    pub moved: bool,
    /// A close was asked of it already.
    pub closing: bool,
}

impl TunnelAge {
    /// Whether it may be shed at `now_ms`: not moved, not closing, at least `settle` old.
    pub fn sheddable(&self, now_ms: u64, settle: Duration) -> bool {
        !self.moved && !self.closing && now_ms.saturating_sub(self.opened_ms) >= settle.as_millis() as u64
    }
}

/// Indices of the `count` oldest sheddable tunnels (oldest first).
pub fn oldest_sheddable(tunnels: &[TunnelAge], now_ms: u64, settle: Duration, count: u32) -> Vec<usize> {
    let mut eligible: Vec<usize> = (0..tunnels.len())
        .filter(|&i| tunnels[i].sheddable(now_ms, settle))
        .collect();
    eligible.sort_by_key(|&i| (tunnels[i].opened_ms, i));
    eligible.truncate(count as usize);
    eligible
}

/// The rate as a budget of fixed windows: at most `limit` sheds in each
/// window of `window_ms` (the rate's period, or the round when longer), and
/// at most `per_round` in one round, so the sheds of a slow rate spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The window's length.
    pub window_ms: u64,
    /// Sheds allowed in one window.
    pub limit: u32,
    /// Sheds one round may ask for.
    pub per_round: u32,
}

impl Budget {
    /// The budget of `rate` for rounds of `round`.
    pub fn of(rate: ConfigRate, round: Duration) -> Budget {
        let per_ms = (rate.per.as_millis() as u64).max(1);
        let round_ms = (round.as_millis() as u64).max(1);
        let window_ms = per_ms.max(round_ms);
        let limit = (u64::from(rate.count) * window_ms / per_ms).min(u64::from(u32::MAX)) as u32;
        let per_round = (u64::from(rate.count) * round_ms)
            .div_ceil(per_ms)
            .clamp(1, u64::from(u32::MAX)) as u32;
        Budget {
            window_ms,
            limit,
            per_round: per_round.min(limit),
        }
    }

    /// The window `now_unix_ms` falls in (every instance agrees on it).
    pub fn window(&self, now_unix_ms: u64) -> u64 {
        now_unix_ms / self.window_ms
    }
}

/// The sheds granted to one ask, given what the window had used before it
/// (`used_before`, counting asks that were not granted in full).
pub fn granted(limit: u32, used_before: u64, asked: u32) -> u32 {
    let left = u64::from(limit).saturating_sub(used_before);
    left.min(u64::from(asked)) as u32
}

/// A budget kept in memory by one instance alone: the window and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalWindow {
    /// The window counted.
    window: u64,
    /// Sheds granted in it.
    used: u64,
}

impl LocalWindow {
    /// Takes up to `asked` sheds from `budget` at `now_unix_ms`.
    pub fn take(&mut self, budget: &Budget, now_unix_ms: u64, asked: u32) -> u32 {
        let window = budget.window(now_unix_ms);
        if window != self.window {
            *self = LocalWindow { window, used: 0 };
        }
        let given = granted(budget.limit, self.used, asked.min(budget.per_round));
        self.used += u64::from(given);
        given
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(local: u32) -> ServerLoad {
        ServerLoad {
            ready: true,
            local,
            remote: 0,
            sheddable: local,
        }
    }

    #[test]
    fn a_new_empty_server_starts_a_round_that_sheds_down_to_the_mean() {
        let loads = [ready(100), ready(100), ready(100), ready(0)];
        let round = plan(&loads, 1.2, true, false);
        assert!(round.active);
        assert_eq!(round.target_max, 75);
        assert_eq!(round.over, vec![0, 1, 2]);
        assert_eq!(round.want, vec![25, 25, 25, 0]);
    }

    #[test]
    fn nothing_is_shed_before_the_set_settles() {
        let loads = [ready(100), ready(100), ready(100), ready(0)];
        let round = plan(&loads, 1.2, false, false);
        assert!(!round.active);
        assert_eq!(round.target_max, 90, "1.2 × the mean of 75");
        assert_eq!(round.over, vec![0, 1, 2], "over the skew, waiting for settle");
        assert_eq!(round.want, vec![0; 4]);
    }

    #[test]
    fn within_the_skew_no_round_starts_but_a_round_in_progress_goes_on_to_the_mean() {
        let loads = [ready(85), ready(80), ready(70), ready(65)];
        let idle = plan(&loads, 1.2, true, false);
        assert!(!idle.active);
        assert!(idle.over.is_empty());
        let going_on = plan(&loads, 1.2, true, true);
        assert!(going_on.active);
        assert_eq!(going_on.target_max, 75);
        assert_eq!(going_on.want, vec![10, 5, 0, 0]);
        let done = plan(&[ready(75), ready(75), ready(75), ready(75)], 1.2, true, true);
        assert!(!done.active, "the round ends at the mean");
    }

    #[test]
    fn servers_not_ready_take_no_part_and_one_ready_server_is_never_shed() {
        let mut draining = ready(300);
        draining.ready = false;
        let round = plan(&[draining, ready(10), ready(0)], 1.2, true, false);
        assert_eq!(round.target_max, 5);
        assert_eq!(round.want, vec![0, 5, 0], "the drain is not rebalancing's job");
        let alone = plan(&[ready(100), draining], 1.2, true, false);
        assert!(!alone.active);
        assert_eq!(alone.target_max, u32::MAX);
    }

    #[test]
    fn under_a_cluster_each_instance_sheds_its_share_of_the_excess() {
        let half = |n| ServerLoad {
            ready: true,
            local: n,
            remote: n,
            sheddable: n,
        };
        let round = plan(&[half(50), half(50), half(50), half(0)], 1.2, true, false);
        assert_eq!(round.target_max, 75);
        assert_eq!(
            round.want,
            vec![12, 12, 12, 0],
            "half of 25, rounded down: the other instance sheds its half too"
        );
        let last_one = |local, remote| ServerLoad {
            ready: true,
            local,
            remote,
            sheddable: local,
        };
        let round = plan(
            &[last_one(50, 26), last_one(35, 40), half(38), half(36)],
            1.2,
            true,
            true,
        );
        assert_eq!(round.target_max, 75);
        assert_eq!(
            round.want,
            vec![1, 0, 0, 0],
            "the last one goes to the instance holding most of it, none on a tie"
        );
        let mine_only = ServerLoad {
            ready: true,
            local: 0,
            remote: 100,
            sheddable: 0,
        };
        let round = plan(&[mine_only, ready(100), ready(100), ready(0)], 1.2, true, false);
        assert_eq!(round.want[0], 0, "nothing local to shed");
    }

    #[test]
    fn young_and_moved_tunnels_cap_what_is_wanted() {
        let mut young = ready(100);
        young.sheddable = 3;
        let round = plan(&[young, ready(100), ready(100), ready(0)], 1.2, true, false);
        assert_eq!(round.want, vec![3, 25, 25, 0]);
    }

    #[test]
    fn the_budget_goes_to_the_fullest_servers_first() {
        assert_eq!(allocate(&[25, 25, 25, 0], 50), vec![17, 17, 16, 0]);
        assert_eq!(allocate(&[30, 5], 10), vec![10, 0]);
        assert_eq!(allocate(&[3, 2], 50), vec![3, 2]);
        assert_eq!(allocate(&[], 5), Vec::<u32>::new());
    }

    #[test]
    fn the_oldest_tunnels_past_settle_are_shed_never_moved_or_closing_ones() {
        let t = |opened_ms, moved, closing| TunnelAge {
            opened_ms,
            moved,
            closing,
        };
        let tunnels = [
            t(500, false, false),
            t(100, true, false),
            t(200, false, false),
            t(300, false, true),
            t(9_500, false, false),
            t(400, false, false),
        ];
        let settle = Duration::from_secs(1);
        assert_eq!(oldest_sheddable(&tunnels, 10_000, settle, 2), vec![2, 5]);
        assert_eq!(
            oldest_sheddable(&tunnels, 10_000, settle, 10),
            vec![2, 5, 0],
            "the tunnel younger than settle stays"
        );
    }

    #[test]
    fn the_budget_keeps_to_the_rate_per_window_and_spreads_slow_rates() {
        let per_second = Budget::of(
            ConfigRate {
                count: 50,
                per: Duration::from_secs(1),
            },
            Duration::from_secs(1),
        );
        assert_eq!(
            (per_second.window_ms, per_second.limit, per_second.per_round),
            (1000, 50, 50)
        );
        let mut local = LocalWindow::default();
        assert_eq!(local.take(&per_second, 10_000, 30), 30);
        assert_eq!(local.take(&per_second, 10_500, 30), 20, "the window's 50 are used up");
        assert_eq!(local.take(&per_second, 11_000, 30), 30, "a new window");
        let per_minute = Budget::of(
            ConfigRate {
                count: 30,
                per: Duration::from_secs(60),
            },
            Duration::from_secs(1),
        );
        assert_eq!((per_minute.limit, per_minute.per_round), (30, 1));
        let slow_rounds = Budget::of(
            ConfigRate {
                count: 5,
                per: Duration::from_secs(1),
            },
            Duration::from_secs(3),
        );
        assert_eq!(
            (slow_rounds.window_ms, slow_rounds.limit, slow_rounds.per_round),
            (3000, 15, 15)
        );
        assert_eq!(granted(50, 37, 38), 13, "a shared window grants what is left");
        assert_eq!(granted(50, 75, 5), 0);
    }
}
