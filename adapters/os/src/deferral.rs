//! When an adapter writes what the core gave connections other than the one whose input it was
//! handling: at once when the server is idle, a little later when it is busy, so that a stream
//! that several publishes reach in a row gets them in one write. Both adapters follow this rule
//! (`parlor-mio` at the end of an event-loop turn, `parlor-smol` before it wakes the connection
//! tasks that got bytes); [`Deferral`] keeps it.
//!
//! * Before writing, the adapter looks for more input. Without waiting, unless it is *busy*
//!   (the last time writes were held back, more input came meanwhile): then it waits up to
//!   [`LINGER`], about the time a client answered at once (a publisher) takes to send its next
//!   request.
//! * Input arrived: handle it first, at most [`DEFER_TURNS`] times and for [`DEFER_FOR`] in a
//!   row. None: write now.
//! * A linger that found no input means the clients were waiting for these very writes (the
//!   answers to their polls) rather than sending more: the next [`NO_LINGER_ROUNDS`] rounds do
//!   not linger, so long-polling clients are not made to wait.
//!
//! A lone message on an idle server still leaves at once (the look that does not wait finds
//! nothing), and nothing waits on a timer of its own in `parlor-mio` (a linger is the poll's
//! timeout, which any input ends).

use std::time::{Duration, Instant};

/// Inputs a busy server may handle, one round after another, before it writes what they gave
/// connections other than the one whose input it was (event-loop turns in `parlor-mio`).
pub const DEFER_TURNS: usize = 8;
/// How long a busy server may hold those writes back, however long its turns take (a loop with
/// many connections may take milliseconds per turn).
pub const DEFER_FOR: Duration = Duration::from_millis(2);
/// While the server is busy, how long a held-back round waits for more input before writing.
pub const LINGER: Duration = Duration::from_micros(100);
/// Rounds of held-back writes that do not linger after a linger found no input.
pub const NO_LINGER_ROUNDS: u32 = 16;

/// Writes held back by a busy server: see the module docs.
#[derive(Debug)]
pub struct Deferral {
    /// Turns taken since the queued writes were last carried out.
    turns: usize,
    /// When the writes now held back were first held back.
    since: Instant,
    /// More input came while writes were held back, the last time they were.
    busy: bool,
    /// Rounds of held-back writes left that do not linger.
    no_linger: u32,
    /// The current wait lingers.
    lingering: bool,
}

impl Deferral {
    /// Nothing held back, and not busy.
    pub fn new(now: Instant) -> Deferral {
        Deferral {
            turns: 0,
            since: now,
            busy: false,
            no_linger: 0,
            lingering: false,
        }
    }

    /// Whether the writes queued so far (`queued`: any) may wait for another turn; counts the
    /// turn if so. `false` means: write them now.
    pub fn hold(&mut self, queued: bool, now: Instant) -> bool {
        if !queued
            || self.turns >= DEFER_TURNS
            || (self.turns > 0 && now.duration_since(self.since) >= DEFER_FOR)
        {
            self.turns = 0;
            return false;
        }
        if self.turns == 0 {
            self.since = now;
            self.no_linger = self.no_linger.saturating_sub(1);
        }
        self.turns += 1;
        true
    }

    /// How long a held-back turn's poll may wait for input: not at all unless the loop is
    /// busy, and never past [`DEFER_FOR`].
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.lingering = self.busy && self.no_linger == 0;
        if self.lingering {
            LINGER.min(DEFER_FOR.saturating_sub(now.duration_since(self.since)))
        } else {
            Duration::ZERO
        }
    }

    /// What a held-back turn's poll found: input (take the turn; the loop is busy), or none
    /// (the next [`hold`](Self::hold) says write now).
    pub fn found(&mut self, input: bool) {
        self.busy = input;
        if !input {
            self.turns = DEFER_TURNS;
            if self.lingering {
                self.no_linger = NO_LINGER_ROUNDS;
            }
        }
        self.lingering = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn nothing_queued_is_never_held() {
        let t0 = Instant::now();
        let mut d = Deferral::new(t0);
        assert!(!d.hold(false, t0));
        assert!(!d.hold(false, t0 + 10 * US));
    }

    #[test]
    fn an_idle_loop_polls_without_waiting_and_writes_when_nothing_came() {
        let t0 = Instant::now();
        let mut d = Deferral::new(t0);
        assert!(d.hold(true, t0));
        assert_eq!(d.wait(t0), Duration::ZERO);
        d.found(false);
        assert!(!d.hold(true, t0 + US), "nothing came: write now");
    }

    #[test]
    fn a_busy_loop_holds_at_most_defer_turns_turns() {
        let t0 = Instant::now();
        let mut d = Deferral::new(t0);
        for turn in 0..DEFER_TURNS {
            assert!(d.hold(true, t0 + US * turn as u32), "turn {turn}");
            d.wait(t0);
            d.found(true);
        }
        assert!(!d.hold(true, t0 + 10 * US), "the turn cap");
        // The next round starts over, and lingers: the loop was busy.
        assert!(d.hold(true, t0 + 11 * US));
        assert_eq!(d.wait(t0 + 11 * US), LINGER);
    }

    #[test]
    fn a_busy_loop_holds_for_defer_for_at_most_and_never_lingers_past_it() {
        let t0 = Instant::now();
        let mut d = Deferral::new(t0);
        assert!(d.hold(true, t0));
        d.wait(t0);
        d.found(true);
        let late = t0 + DEFER_FOR - 30 * US;
        assert!(d.hold(true, late));
        assert_eq!(d.wait(late), 30 * US, "what is left of DEFER_FOR");
        d.found(true);
        assert!(!d.hold(true, t0 + DEFER_FOR), "the time cap");
    }

    #[test]
    fn a_linger_that_finds_nothing_stops_lingering_for_some_rounds() {
        let t0 = Instant::now();
        let mut d = Deferral::new(t0);
        // Busy: input came on a held-back turn.
        assert!(d.hold(true, t0));
        d.wait(t0);
        d.found(true);
        assert!(d.hold(true, t0));
        assert_eq!(d.wait(t0), LINGER);
        d.found(false); // the linger found nothing: clients wait for these writes
        assert!(!d.hold(true, t0));
        for round in 0..NO_LINGER_ROUNDS - 1 {
            assert!(d.hold(true, t0), "round {round}");
            assert_eq!(d.wait(t0), Duration::ZERO, "round {round}");
            d.found(true);
            assert!(!d.hold(true, t0 + DEFER_FOR));
        }
        assert!(d.hold(true, t0 + DEFER_FOR));
        assert_eq!(d.wait(t0 + DEFER_FOR), LINGER, "lingers again");
    }
}
