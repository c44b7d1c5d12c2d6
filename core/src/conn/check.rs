//! The connection layer's invariants, checked by the fuzz harness and the property tests.

use super::{Conns, State};
use crate::room::Rooms;
use crate::ConnId;

impl Conns {
    /// Checks this layer's invariants against the rooms' waiters.
    pub fn check_invariants(&self, rooms: &Rooms) -> Result<(), String> {
        let s = &self.settings;
        let mut held = 0;
        let mut streaming = 0;
        for (k, c) in self.slab.iter() {
            if let State::Streaming(st) = c.state {
                streaming += 1;
                let w = rooms
                    .try_get(st.room())
                    .ok_or(format!("conn {k}: streaming in a freed room"))?
                    .streams
                    .get(st.slot())
                    .ok_or(format!("conn {k}: stream slot missing"))?;
                if w.conn != ConnId(k) {
                    return Err(format!("conn {k}: stream slot names conn {}", w.conn.0));
                }
                if c.deadline.kind() != Some(crate::timers::TimerKind::Heartbeat) {
                    return Err(format!("conn {k}: stream without its heartbeat"));
                }
            }
            if let State::Held(h) = c.state {
                held += 1;
                let w = rooms
                    .try_get(h.room())
                    .ok_or(format!("conn {k}: held in a freed room"))?
                    .waiters
                    .get(h.slot())
                    .ok_or(format!("conn {k}: held slot missing"))?;
                if w.conn != ConnId(k) {
                    return Err(format!("conn {k}: slot names conn {}", w.conn.0));
                }
            }
            if !self.timers.holds(ConnId(k), &c.deadline) {
                return Err(format!("conn {k}: deadline missing from the timer set"));
            }
            let cap = s.limits.max_head + s.limits.max_body + s.max_pipeline_bytes + 1024 * 1024;
            if c.reader.buffered() > cap {
                return Err(format!("conn {k}: {} bytes buffered", c.reader.buffered()));
            }
        }
        for id in self.timers.conns() {
            if !self.slab.contains(id.0) {
                return Err(format!("deadline for closed conn {}", id.0));
            }
        }
        let waiters: usize = rooms.iter().map(|r| r.waiters.len()).sum();
        if waiters != held || held != self.held {
            return Err(format!(
                "waiters {waiters}, held conns {held}, held gauge {}",
                self.held
            ));
        }
        let streams: usize = rooms.iter().map(|r| r.streams.len()).sum();
        if streams != streaming || streaming != self.streams {
            return Err(format!(
                "room streams {streams}, streaming conns {streaming}, gauge {}",
                self.streams
            ));
        }
        self.proxied.check(|id| {
            self.slab
                .get(id.0)
                .is_some_and(|c| matches!(c.state, State::Held(_) | State::Streaming(_)))
        })?;
        for r in rooms.iter() {
            for (_, w) in r.streams.iter() {
                if !self.slab.contains(w.conn.0) {
                    return Err(format!("stream for closed conn {}", w.conn.0));
                }
            }
            for (_, w) in r.waiters.iter() {
                if !self.slab.contains(w.conn.0) {
                    return Err(format!("waiter for closed conn {}", w.conn.0));
                }
            }
        }
        Ok(())
    }
}
