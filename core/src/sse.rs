//! Server-Sent Events: the bytes of an event stream (`GET /events`).
//!
//! A stream is one `200 text/event-stream` response that stays open. On HTTP/1.1 its body is
//! chunked and every event is exactly one chunk (its header included in the event's `Bytes`), so
//! the connection's framing stays valid and a clean end is the terminating chunk; an HTTP/1.0
//! client gets a close-delimited body (the same events without chunk headers).
//!
//! ```text
//! retry: 3000              first bytes: the reconnection delay, and the room's current cursor
//! event: ready             (with `id:` too when nothing is replayed after it)
//! data: <cursor>
//!
//! event: reset             the client's cursor is of another epoch (history was reset)
//! data:
//!
//! event: gap               messages known to be missed (evicted before the client read them)
//! data: 3
//!
//! id: <cursor>             one event per message: the text as `data:` lines
//! data: line one           (split at LF, CRLF and a bare CR), or with `format=json`
//! data: line two           the batch's object for one message on one `data:` line
//!
//! : keepalive              after a heartbeat interval of silence
//! ```
//!
//! A message's event is encoded once per (format, framing) and the `Bytes` shared by every
//! stream of its room that wants it.

use bytes::Bytes;

use crate::batch::push_message_json;
use crate::conn::StreamBytes;
use crate::cors;
use crate::cursor::Cursor;
use crate::response::{push_u64, Persist, Response};
use crate::room::{Message, Room};

/// The content type of an event stream.
pub(crate) const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// The heartbeat comment and the end of a chunked stream.
static CHUNKED: StreamBytes = StreamBytes {
    heartbeat: b"d\r\n: keepalive\n\n\r\n",
    end: b"0\r\n\r\n",
};

/// The heartbeat comment of a close-delimited stream (it ends by closing).
static CLOSE_DELIMITED: StreamBytes = StreamBytes {
    heartbeat: b": keepalive\n\n",
    end: b"",
};

/// The constant bytes of a stream with this framing.
pub(crate) fn stream_bytes(chunked: bool) -> &'static StreamBytes {
    if chunked {
        &CHUNKED
    } else {
        &CLOSE_DELIMITED
    }
}

/// Appends `event` to `out`, as one chunk when `chunked`.
fn push_framed(out: &mut Vec<u8>, event: &[u8], chunked: bool) {
    if chunked {
        push_hex(out, event.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(event);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(event);
    }
}

fn push_hex(out: &mut Vec<u8>, n: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let start = out.len();
    let mut n = n;
    loop {
        out.push(DIGITS[n % 16]);
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out[start..].reverse();
}

/// Appends `text` as `data:` lines. Every line break (LF, CRLF or a bare CR) ends a line, as an
/// event-stream parser reads them; the client joins the lines with LF, so a CR does not survive
/// (it arrives as LF). `format=json` carries the exact text.
fn push_data_lines(out: &mut Vec<u8>, text: &[u8]) {
    let mut rest = text;
    loop {
        out.extend_from_slice(b"data: ");
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                out.extend_from_slice(&rest[..i]);
                out.push(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                return;
            }
        }
    }
}

/// Appends the event of message `m` of a room numbered in `epoch`.
fn push_message_event(out: &mut Vec<u8>, epoch: &str, m: &Message, json: bool) {
    out.extend_from_slice(b"id: ");
    Cursor::at(epoch, m.seq).push_to(out);
    out.push(b'\n');
    if json {
        out.extend_from_slice(b"data: ");
        push_message_json(out, epoch, m);
        out.push(b'\n');
    } else {
        push_data_lines(out, &m.text);
    }
    out.push(b'\n');
}

/// The event of message `m`, framed.
pub(crate) fn message(epoch: &str, m: &Message, json: bool, chunked: bool) -> Bytes {
    let mut event = Vec::with_capacity(m.text.len() + 64);
    push_message_event(&mut event, epoch, m, json);
    if !chunked {
        return Bytes::from(event);
    }
    let mut out = Vec::with_capacity(event.len() + 12);
    push_framed(&mut out, &event, true);
    Bytes::from(out)
}

/// How a stream starts: what the client asked for and what the room holds for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start<'a> {
    pub json: bool,
    pub chunked: bool,
    /// The response head's connection header (`Close` for HTTP/1.0: the body ends the
    /// connection).
    pub persist: Persist,
    /// The allow-listed origin, if the request is cross-origin.
    pub origin: Option<&'a str>,
    /// The reconnection delay, in milliseconds.
    pub retry_ms: u64,
    /// The client's cursor is of another epoch: send `event: reset`.
    pub reset: bool,
    /// Messages known to be missed before the first replayed one (`event: gap`).
    pub gap: u64,
    /// Replay the retained messages after this sequence number.
    pub after: u64,
}

impl Start<'_> {
    /// The head and the first events of the stream: `retry` and `ready`, then `reset` and
    /// `gap` if they apply, then every retained message after the cursor. Also returns how many
    /// message events it carries.
    pub fn encode(&self, room: &Room) -> (Bytes, u64) {
        let mut headers = Vec::with_capacity(5);
        headers.push(("X-Accel-Buffering", "no"));
        if let Some(origin) = self.origin {
            headers.extend(cors::answer_headers(origin));
        }
        if self.chunked {
            headers.push(("Transfer-Encoding", "chunked"));
        }
        let mut out = Vec::with_capacity(256);
        Response {
            headers: &headers,
            persist: self.persist,
            ..Response::new(200, Some(CONTENT_TYPE), b"")
        }
        .encode_stream_head_into(&mut out);

        let replay = room.last_seq > self.after;
        let current = Cursor::at(&room.epoch, room.last_seq);
        let mut event = Vec::with_capacity(96);
        event.extend_from_slice(b"retry: ");
        push_u64(&mut event, self.retry_ms);
        event.extend_from_slice(b"\n");
        if !replay {
            // Nothing follows, so the client may resume from here (`Last-Event-ID`).
            event.extend_from_slice(b"id: ");
            current.push_to(&mut event);
            event.push(b'\n');
        }
        event.extend_from_slice(b"event: ready\ndata: ");
        current.push_to(&mut event);
        event.extend_from_slice(b"\n\n");
        push_framed(&mut out, &event, self.chunked);
        if self.reset {
            push_framed(&mut out, b"event: reset\ndata: \n\n", self.chunked);
        }
        if self.gap > 0 {
            event.clear();
            event.extend_from_slice(b"event: gap\ndata: ");
            push_u64(&mut event, self.gap);
            event.extend_from_slice(b"\n\n");
            push_framed(&mut out, &event, self.chunked);
        }
        let mut count = 0;
        for m in room.after(self.after) {
            event.clear();
            push_message_event(&mut event, &room.epoch, m, self.json);
            push_framed(&mut out, &event, self.chunked);
            count += 1;
        }
        (Bytes::from(out), count)
    }
}

/// The event of one message in every representation the streams of its room want: each
/// (format, framing) encoded once, on first use, and the `Bytes` cloned to every stream that
/// wants it.
pub(crate) struct Event<'a> {
    epoch: &'a str,
    message: &'a Message,
    /// At most four representations: JSON or text, chunked or not.
    encoded: [Option<Bytes>; 4],
}

impl<'a> Event<'a> {
    /// The event of message `seq` of `room`, if the room still holds it.
    pub fn new(room: &'a Room, seq: u64) -> Option<Event<'a>> {
        let message = room.after(seq - 1).next().filter(|m| m.seq == seq)?;
        Some(Event {
            epoch: &room.epoch,
            message,
            encoded: Default::default(),
        })
    }

    /// The event's bytes for a stream of this format and framing.
    pub fn bytes(&mut self, json: bool, chunked: bool) -> Bytes {
        let key = usize::from(json) * 2 + usize::from(chunked);
        let (epoch, m) = (self.epoch, self.message);
        self.encoded[key]
            .get_or_insert_with(|| message(epoch, m, json, chunked))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &'static [u8]) -> Message {
        Message {
            seq: 7,
            time_ms: 1000,
            text: Bytes::from_static(text),
            id: None,
        }
    }

    #[test]
    fn text_becomes_data_lines_at_every_line_break() {
        let e = message("ep", &msg(b"a\nb\r\nc\rd"), false, false);
        assert_eq!(&e[..], b"id: ep-7\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        let e = message("ep", &msg(b"x\n"), false, false);
        assert_eq!(&e[..], b"id: ep-7\ndata: x\ndata: \n\n");
        let e = message("ep", &msg(b"\r\r\n"), false, false);
        assert_eq!(&e[..], b"id: ep-7\ndata: \ndata: \ndata: \n\n");
    }

    #[test]
    fn json_events_carry_the_batch_object() {
        let e = message("ep", &msg(b"a\"\n"), true, false);
        assert_eq!(
            &e[..],
            b"id: ep-7\ndata: {\"cursor\":\"ep-7\",\"time\":1000,\"text\":\"a\\\"\\n\"}\n\n"
        );
    }

    #[test]
    fn chunked_events_are_one_chunk_each() {
        let e = message("ep", &msg(b"hi"), false, true);
        assert_eq!(&e[..], b"13\r\nid: ep-7\ndata: hi\n\n\r\n");
        assert_eq!("id: ep-7\ndata: hi\n\n".len(), 0x13);
        let beat = CHUNKED.heartbeat;
        assert_eq!(beat, b"d\r\n: keepalive\n\n\r\n");
        assert_eq!(CLOSE_DELIMITED.heartbeat.len(), 0xd);
        let mut out = Vec::new();
        push_hex(&mut out, 0);
        push_hex(&mut out, 4096);
        assert_eq!(out, b"01000");
    }
}
