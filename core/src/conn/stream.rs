//! The Streaming state: a `GET /events` stream, from its start to its clean end.
//!
//! Open → Streaming → Closing, never back. A stream sits in its room's slab of streams, reads no
//! more requests, and has one deadline: the heartbeat, pushed back by every event sent and
//! capped by the stream's maximum age, when it is ended cleanly (the terminating chunk, if
//! chunked) and closed.

use std::time::Instant;

use bytes::Bytes;

use super::{Conns, Settings, State};
use crate::room::Rooms;
use crate::timers::TimerKind;
use crate::ConnId;

/// The constant bytes of an event stream's framing, handed over by the route (`sse.rs`).
#[derive(Debug)]
pub(crate) struct StreamBytes {
    /// The heartbeat comment, sent after a heartbeat interval of silence.
    pub heartbeat: &'static [u8],
    /// What ends the body cleanly before the close (the terminating chunk, or nothing).
    pub end: &'static [u8],
}

/// An open event stream: where it sits in its room, and when it must end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream {
    pub room: usize,
    pub slot: usize,
    pub bytes: &'static StreamBytes,
    /// When the stream is ended (its maximum age), if ever.
    pub ends: Option<Instant>,
}

/// What a stream's deadline asks for (see [`Conns::stream_due`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamDue {
    /// Silent for a heartbeat interval: the heartbeat was sent.
    Heartbeat,
    /// The stream reached its maximum age: it was ended.
    Ended,
}

impl Conns {
    /// Event streams open now.
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// Open → Streaming: the connection listens in `stream.room`'s slot `stream.slot` from now
    /// on. Sends `start` (the head and first events) and arms the heartbeat. The connection
    /// reads no more requests; what arrives is discarded, so only its EOF matters.
    pub fn stream(
        &mut self,
        id: ConnId,
        mut stream: Stream,
        start: Bytes,
        rooms: &mut Rooms,
        now: Instant,
    ) {
        let s = self.settings;
        if !s.sse_max_age.is_zero() {
            stream.ends = Some(now + s.sse_max_age);
        }
        let c = &mut self.slab[id.0];
        c.state = State::Streaming(stream);
        c.reader.release();
        self.streams += 1;
        self.set_timer(
            id,
            Some((heartbeat_due(s, stream.ends, now), TimerKind::Heartbeat)),
        );
        self.send(id, start, rooms);
    }

    /// Sends an event on a stream and pushes its heartbeat back (without touching the timer
    /// set, so a busy stream costs no timer work per event).
    pub fn stream_send(&mut self, id: ConnId, data: Bytes, rooms: &mut Rooms, now: Instant) {
        self.send(id, data, rooms);
        let s = self.settings;
        if let Some(c) = self.slab.get_mut(id.0) {
            if let State::Streaming(stream) = c.state {
                let due = heartbeat_due(s, stream.ends, now);
                self.timers
                    .push_back(id, &mut c.deadline, TimerKind::Heartbeat, due);
            }
        }
    }

    /// A stream's deadline fired: past its maximum age it ends, else it gets a heartbeat.
    pub fn stream_due(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) -> Option<StreamDue> {
        let State::Streaming(stream) = self.slab.get(id.0)?.state else {
            return None;
        };
        if stream.ends.is_some_and(|end| end <= now) {
            self.end_stream(id, rooms, now);
            return Some(StreamDue::Ended);
        }
        // The deadline has just fired (disarmed): sending re-arms it.
        let beat = Bytes::from_static(stream.bytes.heartbeat);
        self.stream_send(id, beat, rooms, now);
        Some(StreamDue::Heartbeat)
    }

    /// Ends a stream cleanly (the terminating chunk, if chunked) and closes the connection.
    pub fn end_stream(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) {
        let Some(State::Streaming(stream)) = self.slab.get(id.0).map(|c| &c.state) else {
            return;
        };
        let end = stream.bytes.end;
        self.leave_room(id, rooms);
        if !end.is_empty() {
            self.send(id, Bytes::from_static(end), rooms);
        }
        self.close(id, rooms, now);
    }
}

/// When a stream that sent something at `now` needs its heartbeat, or its end.
fn heartbeat_due(s: Settings, ends: Option<Instant>, now: Instant) -> Instant {
    let beat = now + s.sse_heartbeat;
    ends.map_or(beat, |end| end.min(beat))
}
