//! The per-server health state machine: consecutive results against `rise`
//! and `fall`. Pure: no clock, no I/O, no logging. As in pingora, `observe`
//! says whether the state *flipped*, so only a flip is acted on and logged.

/// A change of a server's availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    /// The server may take traffic again.
    Up,
    /// The server must take no new traffic.
    Down,
}

impl Flip {
    /// The availability after the flip.
    pub fn is_up(self) -> bool {
        self == Flip::Up
    }
}

/// How many consecutive results flip a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive passed checks that bring a down server up (at least 1).
    pub rise: u32,
    /// Consecutive failures (active and passive together) that take an up server down (at least 1).
    pub fall: u32,
}

/// Consecutive results of one server. Whether the server is up is not kept
/// here but passed in, since the live flag (`ServerState::up`) is the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Machine {
    /// Whether a check result was seen since checks began: the first one
    /// decides at once, so a new server does not wait `rise` intervals.
    checked: bool,
    /// Consecutive passed checks.
    successes: u32,
    /// Consecutive failed checks.
    failures: u32,
    /// Connect failures of live traffic since the last successful connect or passed check.
    passive_failures: u32,
}

impl Machine {
    /// Takes one active check result for a server that is `up` now; returns
    /// the flip it causes, if any.
    pub fn observe(&mut self, up: bool, passed: bool, limits: Thresholds) -> Option<Flip> {
        if passed {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            self.passive_failures = 0;
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let first = !std::mem::replace(&mut self.checked, true);
        match (up, passed) {
            (false, true) if first || self.successes >= limits.rise => Some(Flip::Up),
            (true, false) if first || self.failure_streak() >= limits.fall => Some(Flip::Down),
            _ => None,
        }
    }

    /// Counts one failed connect of live traffic toward `fall`. A server
    /// that is already down is not counted against: only a check brings it back.
    pub fn observe_passive_failure(&mut self, up: bool, limits: Thresholds) -> Option<Flip> {
        if !up {
            return None;
        }
        self.successes = 0;
        self.passive_failures = self.passive_failures.saturating_add(1);
        (self.failure_streak() >= limits.fall).then_some(Flip::Down)
    }

    /// A connect of live traffic succeeded: failed connects before it no longer count.
    pub fn passive_success(&mut self) {
        self.passive_failures = 0;
    }

    /// Forgets everything, as when checks are turned off: the next check decides at once.
    pub fn reset(&mut self) {
        *self = Machine::default();
    }

    /// Whether any check result was seen.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// Consecutive passed checks.
    pub fn successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failed checks.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Failed connects of live traffic counted now.
    pub fn passive_failures(&self) -> u32 {
        self.passive_failures
    }

    /// Failures that count toward `fall`: failed checks plus failed connects.
    pub fn failure_streak(&self) -> u32 {
        self.failures.saturating_add(self.passive_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds { rise: 2, fall: 3 };

    /// Feeds `results` to a machine, applying flips; returns the up flag after each.
    fn run(machine: &mut Machine, mut up: bool, results: &[bool], limits: Thresholds) -> Vec<bool> {
        results
            .iter()
            .map(|passed| {
                if let Some(flip) = machine.observe(up, *passed, limits) {
                    assert_ne!(flip.is_up(), up, "a flip must change something");
                    up = flip.is_up();
                }
                up
            })
            .collect()
    }

    #[test]
    fn the_first_result_decides_at_once_either_way() {
        assert_eq!(Machine::default().observe(false, true, LIMITS), Some(Flip::Up));
        assert_eq!(Machine::default().observe(true, false, LIMITS), Some(Flip::Down));
        assert_eq!(Machine::default().observe(true, true, LIMITS), None);
        assert_eq!(Machine::default().observe(false, false, LIMITS), None);
    }

    #[test]
    fn after_the_first_result_fall_failures_take_it_down_and_rise_successes_bring_it_up() {
        let mut machine = Machine::default();
        let ups = run(
            &mut machine,
            false,
            &[true, false, false, false, true, true, false, true, true],
            LIMITS,
        );
        assert_eq!(ups, [true, true, true, false, false, true, true, true, true]);
    }

    #[test]
    fn a_success_between_failures_restarts_the_count() {
        let mut machine = Machine::default();
        let ups = run(
            &mut machine,
            true,
            &[true, false, false, true, false, false, false],
            LIMITS,
        );
        assert_eq!(ups, [true, true, true, true, true, true, false]);
        // And a failure between successes while down.
        let ups = run(&mut machine, false, &[true, false, true, true], LIMITS);
        assert_eq!(ups, [false, false, false, true]);
    }

    #[test]
    fn rise_and_fall_of_one_flip_on_every_change() {
        let limits = Thresholds { rise: 1, fall: 1 };
        let mut machine = Machine::default();
        let ups = run(&mut machine, true, &[true, false, true, false], limits);
        assert_eq!(ups, [true, false, true, false]);
    }

    #[test]
    fn passive_failures_count_toward_fall_with_failed_checks() {
        let mut machine = Machine::default();
        assert_eq!(machine.observe(true, true, LIMITS), None);
        assert_eq!(machine.observe(true, false, LIMITS), None);
        assert_eq!(machine.observe_passive_failure(true, LIMITS), None);
        assert_eq!(machine.observe_passive_failure(true, LIMITS), Some(Flip::Down));
        // Down: further failed connects are not counted; a check brings it back.
        assert_eq!(machine.observe_passive_failure(false, LIMITS), None);
        assert_eq!(machine.observe(false, true, LIMITS), None);
        assert_eq!(machine.observe(false, true, LIMITS), Some(Flip::Up));
        assert_eq!(machine.failure_streak(), 0);
    }

    #[test]
    fn a_successful_connect_clears_passive_failures_but_not_failed_checks() {
        let mut machine = Machine::default();
        machine.observe(true, true, LIMITS);
        machine.observe(true, false, LIMITS);
        machine.observe_passive_failure(true, LIMITS);
        machine.passive_success();
        assert_eq!((machine.failures(), machine.passive_failures()), (1, 0));
        assert_eq!(machine.observe_passive_failure(true, LIMITS), None);
        assert_eq!(machine.observe(true, false, LIMITS), Some(Flip::Down));
    }

    #[test]
    fn passive_failures_alone_take_a_server_down_after_fall_of_them() {
        let limits = Thresholds { rise: 1, fall: 2 };
        let mut machine = Machine::default();
        machine.observe(true, true, limits);
        assert_eq!(machine.observe_passive_failure(true, limits), None);
        assert_eq!(machine.observe_passive_failure(true, limits), Some(Flip::Down));
    }

    #[test]
    fn a_passed_check_clears_passive_failures() {
        let mut machine = Machine::default();
        machine.observe(true, true, LIMITS);
        machine.observe_passive_failure(true, LIMITS);
        machine.observe_passive_failure(true, LIMITS);
        machine.observe(true, true, LIMITS);
        assert_eq!(machine.observe_passive_failure(true, LIMITS), None);
    }

    #[test]
    fn reset_makes_the_next_check_decide_at_once() {
        let mut machine = Machine::default();
        run(&mut machine, true, &[true, false], LIMITS);
        machine.reset();
        assert!(!machine.is_checked());
        assert_eq!(machine.observe(true, false, LIMITS), Some(Flip::Down));
    }
}
