//! The Waiting state: a request that waits for the shared message log.
//!
//! With a shared log (`Config::shared_log`) two requests cannot be answered from memory at once:
//! a publish, answered only once the log has stored its message, and a poll on a room this node
//! has not loaded yet (or whose cursor is ahead of what it has seen). The connection then waits,
//! named by the token of its wait in `log.rs`, with a `Broker` deadline; requests behind it stay
//! buffered, as behind a held poll. The server ends the wait when the answer comes (or the
//! deadline fires) and answers the request itself.

use std::time::{Duration, Instant};

use super::{Conns, State};
use crate::timers::TimerKind;
use crate::ConnId;

impl Conns {
    /// Open → Waiting for the log's answer to `token`, with a deadline `timeout` from `now`.
    pub fn wait(&mut self, id: ConnId, token: u64, timeout: Duration, now: Instant) {
        let Some(c) = self.slab.get_mut(id.0) else {
            return;
        };
        if !matches!(c.state, State::Open) {
            return;
        }
        c.state = State::Waiting { token };
        c.reader.release();
        self.set_timer(id, Some((now + timeout, TimerKind::Broker)));
    }

    /// Waiting for `token` → Open; `false` (and no change) when the connection is not waiting
    /// for that token (it closed meanwhile, or its slot was reused). The caller then answers
    /// the request and marks the connection [`ready`](Self::ready).
    pub fn end_wait(&mut self, id: ConnId, token: u64) -> bool {
        let Some(c) = self.slab.get_mut(id.0) else {
            return false;
        };
        if !matches!(c.state, State::Waiting { token: t } if t == token) {
            return false;
        }
        c.state = State::Open;
        self.set_timer(id, None);
        true
    }

    /// The token a connection waits for, if it is Waiting.
    pub fn waiting_for(&self, id: ConnId) -> Option<u64> {
        match self.slab.get(id.0)?.state {
            State::Waiting { token } => Some(token),
            _ => None,
        }
    }
}
