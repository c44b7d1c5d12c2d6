//! The Streaming state: a `GET /events` stream, from its start to its clean end.
//!
//! Open → Streaming → Closing, never back. A stream sits in its room's slab of streams, reads no
//! more requests, and has one deadline: the heartbeat, pushed back by every event sent and
//! capped by the stream's maximum age, when it is ended cleanly (the terminating chunk, if
//! chunked) and closed.

use std::time::Instant;

use bytes::Bytes;

use super::held::small_index;
use super::{Conns, Settings, State};
use crate::room::Rooms;
use crate::timers::{Ticks, TimerKind};
use crate::{ConnId, Output};

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
    /// The room and the stream's slot in it (`u32`: see [`small_index`]).
    room: u32,
    slot: u32,
    bytes: &'static StreamBytes,
    /// When the stream is ended (its maximum age), in the timers' [`Ticks`]; `NEVER`: no
    /// maximum age. 8 bytes, where an `Option<Instant>` takes 16.
    ends: Ticks,
}

/// `Stream::ends` of a stream without a maximum age.
const NEVER: Ticks = Ticks::MAX;

impl Stream {
    /// A stream in slot `slot` of `room`, framed by `bytes`; its maximum age is set when it
    /// opens ([`Conns::stream`]).
    pub fn new(room: usize, slot: usize, bytes: &'static StreamBytes) -> Stream {
        Stream {
            room: small_index(room),
            slot: small_index(slot),
            bytes,
            ends: NEVER,
        }
    }

    /// The room the stream listens in.
    pub fn room(&self) -> usize {
        self.room as usize
    }

    /// The stream's slot in its room.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }
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
            stream.ends = self.timers.ticks(now + s.sse_max_age);
        }
        let c = &mut self.slab[id.0];
        c.state = State::Streaming(stream);
        c.reader.release();
        self.streams += 1;
        self.set_timer(
            id,
            Some((self.heartbeat_due(stream, now), TimerKind::Heartbeat)),
        );
        self.send(id, start, rooms);
    }

    /// Sends bytes on a stream (a heartbeat) and pushes its heartbeat back (without touching
    /// the timer set). A fan-out's events go through [`queue_event`](Self::queue_event).
    pub fn stream_send(&mut self, id: ConnId, data: Bytes, rooms: &mut Rooms, now: Instant) {
        self.send(id, data, rooms);
        let s = self.settings;
        if let Some(c) = self.slab.get_mut(id.0) {
            if let State::Streaming(stream) = c.state {
                let due = heartbeat_due(s, self.timers.time_of(stream.ends), now);
                self.timers
                    .push_back(id, &mut c.deadline, TimerKind::Heartbeat, due);
            }
        }
    }

    /// When a stream that sends something at `now` next needs a heartbeat (before its maximum
    /// age is taken into account): the same for every stream a fan-out reaches.
    pub fn heartbeat_after(&self, now: Instant) -> Ticks {
        self.timers.ticks(now + self.settings.sse_heartbeat)
    }

    /// Queues one event of a fan-out on stream `id` and pushes its heartbeat back to `beat`
    /// (from [`heartbeat_after`](Self::heartbeat_after); capped by the stream's maximum age),
    /// without touching the timer set. Returns false when the stream's unsent bytes are now
    /// past the cap: the caller then [`cut_off`](Self::cut_off)s it once it has finished with
    /// the room's streams.
    pub fn queue_event(&mut self, id: ConnId, data: Bytes, beat: Ticks) -> bool {
        let Some(c) = self.slab.get_mut(id.0) else {
            return true;
        };
        let State::Streaming(stream) = c.state else {
            return true;
        };
        c.unsent += data.len();
        self.outputs.push_back(Output::Send { conn: id, data });
        // `NEVER` (no maximum age) is the largest tick: the beat wins.
        let due = stream.ends.min(beat);
        self.timers
            .push_back_ticks(id, &mut c.deadline, TimerKind::Heartbeat, due);
        c.unsent <= self.settings.max_unsent_bytes
    }

    /// Cuts off a stream whose unsent bytes passed the cap (a reader that does not keep up): it
    /// leaves its room and is aborted, as [`send`](Self::send) does for any connection. It
    /// reconnects and resumes from its last id.
    pub fn cut_off(&mut self, id: ConnId, rooms: &mut Rooms) {
        let Some(c) = self.slab.get(id.0) else {
            return;
        };
        if !matches!(c.state, State::Streaming(_)) {
            return;
        }
        self.metrics.stream_cutoffs += 1;
        self.leave_room(id, rooms);
        self.slab[id.0].state = State::Closing;
        self.outputs.push_back(Output::Abort { conn: id });
        self.set_timer(id, None);
    }

    /// A stream's deadline fired: past its maximum age it ends, else it gets a heartbeat.
    pub fn stream_due(&mut self, id: ConnId, rooms: &mut Rooms, now: Instant) -> Option<StreamDue> {
        let State::Streaming(stream) = self.slab.get(id.0)?.state else {
            return None;
        };
        if stream.ends != NEVER && stream.ends <= self.timers.ticks(now) {
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

impl Conns {
    /// [`heartbeat_due`] of `stream`.
    fn heartbeat_due(&self, stream: Stream, now: Instant) -> Instant {
        heartbeat_due(self.settings, self.timers.time_of(stream.ends), now)
    }
}

/// When a stream that sent something at `now` needs its heartbeat, or its end.
fn heartbeat_due(s: Settings, ends: Option<Instant>, now: Instant) -> Instant {
    let beat = now + s.sse_heartbeat;
    ends.map_or(beat, |end| end.min(beat))
}
