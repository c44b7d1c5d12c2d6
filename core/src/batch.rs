//! Encoding the answer to a poll: one message as plain text, or a batch as JSON, with the
//! cursor headers. A fan-out encodes each representation once and shares the `Bytes`.

use bytes::Bytes;
use slab::Slab;

use crate::cors;
use crate::cors::Cors;
use crate::cursor::Cursor;
use crate::form::push_json_string;
use crate::response::{self, push_u64, Persist, Response};
use crate::room::{Message, Room, Waiter};
use crate::ConnId;

/// What tells two answers to the same poll apart: JSON or plain, the connection header, the
/// allow-listed origin (CORS headers), and whether the poll's cursor was of another epoch (the
/// answer says the history was reset).
type Representation = (bool, Persist, Option<u16>, bool);

/// The headers of a poll or publish answer: its cursor, the gap if any, the reset signal if the
/// poll's cursor was of another epoch, and the CORS headers for an allow-listed cross-origin
/// caller.
pub(crate) fn poll_headers<'a>(
    cursor: &'a str,
    gap: u64,
    gap_text: &'a str,
    reset: bool,
    origin: Option<&'a str>,
) -> PollHeaders<'a> {
    let mut headers = PollHeaders {
        list: [("", ""); 6],
        len: 0,
    };
    headers.push(("Parlor-Cursor", cursor));
    if gap > 0 {
        headers.push(("Parlor-Gap", gap_text));
    }
    if reset {
        headers.push(("Parlor-Reset", "1"));
    }
    if let Some(origin) = origin {
        for h in cors::answer_headers(origin) {
            headers.push(h);
        }
    }
    headers
}

/// The header fields of a poll's or a publish's answer, on the stack (at most six: the cursor,
/// the gap, the reset signal and three of CORS): one allocation less per answer.
pub(crate) struct PollHeaders<'a> {
    list: [(&'a str, &'a str); 6],
    len: usize,
}

impl<'a> PollHeaders<'a> {
    fn push(&mut self, header: (&'a str, &'a str)) {
        self.list[self.len] = header;
        self.len += 1;
    }
}

impl<'a> std::ops::Deref for PollHeaders<'a> {
    type Target = [(&'a str, &'a str)];

    fn deref(&self) -> &Self::Target {
        &self.list[..self.len]
    }
}

/// Appends one message as the JSON object a batch lists (and an event stream's `format=json`
/// events carry): `{"cursor":…,"time":…,"text":…}`.
pub(crate) fn push_message_json(out: &mut Vec<u8>, epoch: &str, m: &Message) {
    out.extend_from_slice(b"{\"cursor\":\"");
    Cursor::at(epoch, m.seq).push_to(out);
    out.extend_from_slice(b"\",\"time\":");
    push_u64(out, m.time_ms);
    out.extend_from_slice(b",\"text\":");
    push_json_string(out, &m.text);
    out.push(b'}');
}

/// How to encode a poll's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batch<'a> {
    /// Messages skipped before the first one (evicted from the history).
    pub gap: u64,
    /// The poll's cursor was of another epoch: the history it pointed into is gone, and how
    /// much of it was missed is unknown (`Parlor-Reset: 1`, `"reset":true`).
    pub reset: bool,
    /// JSON batch rather than one plain-text message.
    pub json: bool,
    /// Most messages in one JSON batch.
    pub max: usize,
    /// Most bytes of one JSON batch's body: the batch stops before the message that would pass
    /// it (but always carries one), and its `next` cursor continues from there.
    pub budget: usize,
    pub persist: Persist,
    /// The allow-listed origin, if the poll is cross-origin.
    pub origin: Option<&'a str>,
}

impl Batch<'_> {
    /// Encodes the answer to a poll with messages of `room` after `after`: the oldest one as
    /// plain text, or a batch as JSON. Also returns how many messages it carries.
    pub fn encode(&self, room: &Room, after: u64) -> (Bytes, u64) {
        // Only a gap is written (`poll_headers`): no allocation for the common gap of 0.
        let gap_text = if self.gap > 0 {
            self.gap.to_string()
        } else {
            String::new()
        };
        if !self.json {
            let Some(m) = room.after(after).next() else {
                return (Bytes::new(), 0);
            };
            let c = Cursor::at(&room.epoch, m.seq).to_string();
            let headers = poll_headers(&c, self.gap, &gap_text, self.reset, self.origin);
            let data = Response {
                headers: &headers,
                persist: self.persist,
                ..Response::new(200, Some(response::TEXT_PLAIN), &m.text)
            }
            .encode();
            return (data, 1);
        }
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(b"{\"room\":");
        push_json_string(&mut body, room.name.as_bytes());
        body.extend_from_slice(b",\"messages\":[");
        let mut next = after;
        let mut count = 0;
        for (i, m) in room.after(after).take(self.max).enumerate() {
            let before = body.len();
            if i > 0 {
                body.push(b',');
            }
            push_message_json(&mut body, &room.epoch, m);
            if i > 0 && body.len() > self.budget {
                body.truncate(before);
                break;
            }
            next = m.seq;
            count += 1;
        }
        let next = Cursor::at(&room.epoch, next).to_string();
        body.extend_from_slice(b"],\"next\":\"");
        body.extend_from_slice(next.as_bytes());
        body.extend_from_slice(b"\",\"gap\":");
        push_u64(&mut body, self.gap);
        if self.reset {
            body.extend_from_slice(b",\"reset\":true");
        }
        body.push(b'}');
        let headers = poll_headers(&next, self.gap, &gap_text, self.reset, self.origin);
        let data = Response {
            headers: &headers,
            persist: self.persist,
            ..Response::new(200, Some(response::APPLICATION_JSON), &body)
        }
        .encode();
        (data, count)
    }
}

/// The answer to a poll that ran out of time: `204` with the unchanged cursor (and the reset
/// signal, when the poll's cursor was of another epoch).
pub(crate) fn timed_out(
    cursor: Cursor<'_>,
    reset: bool,
    origin: Option<&str>,
    persist: Persist,
) -> Bytes {
    let cursor = cursor.to_string();
    let headers = poll_headers(&cursor, 0, "", reset, origin);
    Response {
        headers: &headers,
        persist,
        ..Response::new(204, None, b"")
    }
    .encode()
}

/// The answers to every waiter of `room` for the message `seq`: one encoding per
/// representation, cloned to every waiter that wants it.
pub(crate) fn fan_out(
    room: &Room,
    waiters: &Slab<Waiter>,
    seq: u64,
    (max, budget): (usize, usize),
    cors: &Cors,
) -> Vec<(ConnId, Bytes, Persist)> {
    // There are only a handful of representations, so a list beats a map.
    let mut encoded: Vec<(Representation, Bytes)> = Vec::new();
    let mut answered = Vec::with_capacity(waiters.len());
    for (_, w) in waiters.iter() {
        let key = (w.json, w.persist, w.cors, w.reset);
        let data = match encoded.iter().find(|(k, _)| *k == key) {
            Some((_, d)) => d.clone(),
            None => {
                let batch = Batch {
                    gap: 0,
                    reset: w.reset,
                    json: w.json,
                    max,
                    budget,
                    persist: w.persist,
                    origin: cors.origin(w.cors),
                };
                let (d, _) = batch.encode(room, seq - 1);
                encoded.push((key, d.clone()));
                d
            }
        };
        answered.push((w.conn, data, w.persist));
    }
    answered
}
