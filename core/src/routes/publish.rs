//! `POST /publish`: check and decode the message, rate-limit the sender, append it to its room.

use std::time::Instant;

use bytes::Bytes;
use core::net::IpAddr;

use crate::batch::poll_headers;
use crate::cursor::Cursor;
use crate::form;
use crate::http::Request;
use crate::rate::RateLimit;
use crate::response::Persist;
use crate::response::{self, Response};
use crate::room::Rooms;
use crate::routes::{check_origin, create_room, room_name, Action, Append, Ctx};

/// Longest client-chosen publish id.
const MAX_ID_BYTES: usize = 128;

/// Who publishes, and when.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sender {
    /// The client's address (forwarded by a trusted proxy, or the peer's): the rate limit's key.
    pub peer: IpAddr,
    pub now: Instant,
    /// `now` in milliseconds since the Unix epoch (dates the message).
    pub time_ms: u64,
}

/// Appends the request's message to its room (or finds it already there by its id) and
/// returns the publisher's answer; the server then answers the room's waiters.
pub(crate) fn handle(
    ctx: &Ctx<'_>,
    rooms: &mut Rooms,
    rate: &mut RateLimit,
    from: Sender,
    mut request: Request,
) -> Action {
    if let Err(action) = check_origin(ctx, &request, "cross-origin publish not allowed") {
        return action;
    }
    // Taken out first: the room's name below borrows the request.
    let body = std::mem::take(&mut request.body);
    let name = match room_name(&request) {
        Ok(n) => n,
        Err(action) => return action,
    };
    let media = form::Media::of(request.headers.content_type.as_deref());
    let wants_json = wants_json(media, &request);
    let body = match read_body(ctx, media, body) {
        Ok(b) => b,
        Err(action) => return action,
    };
    let existing = rooms.find(&name);
    let repeated = body
        .id
        .as_deref()
        .and_then(|key| existing.and_then(|i| rooms.get(i).ids.get(key).map(|&seq| (i, seq))));
    let (room_i, seq, fresh) = match repeated {
        Some((i, seq)) => (i, seq, None),
        None => {
            if let Some(wait) = rate.take(from.peer, from.now) {
                return Action::Reject {
                    status: 429,
                    reason: "too many messages, slow down",
                    header: Some(("Retry-After", wait.to_string())),
                };
            }
            // Only now, with every check passed, may the room come into being.
            let room_i = match create_room(ctx, rooms, &name) {
                Ok(r) => r,
                Err(action) => return action,
            };
            if ctx.log.shared {
                return append(ctx, room_i, body, from, &request, wants_json);
            }
            let config = ctx.config;
            let seq = rooms.push(
                room_i,
                exact(body.message.into_bytes()),
                body.id.map(String::into_boxed_str),
                from.time_ms,
                config.history_messages,
                config.history_bytes,
            );
            (room_i, seq, Some(seq))
        }
    };
    let origin = ctx
        .cors
        .origin(ctx.cors.index(request.headers.origin.as_deref()));
    let answer = encode_answer(
        ctx.persist,
        Cursor::at(&rooms.get(room_i).epoch, seq),
        wants_json,
        origin,
    );
    Action::Published {
        room: room_i,
        seq: fresh,
        answer,
    }
}

/// The message text as kept in the history: at its exact length (a decoded form body comes in
/// a buffer sized for the encoded one, which `Bytes::from` would keep whole).
fn exact(mut text: Vec<u8>) -> Bytes {
    text.shrink_to_fit();
    if text.capacity() == text.len() {
        Bytes::from(text)
    } else {
        Bytes::copy_from_slice(&text)
    }
}

/// With a shared log: the message goes to the log, or `503` while the log is down (nothing
/// could be stored, and the publisher must never be told otherwise).
fn append(
    ctx: &Ctx<'_>,
    room: usize,
    body: form::Publish,
    from: Sender,
    request: &Request,
    json: bool,
) -> Action {
    if !ctx.log.up {
        return Action::Reject {
            status: 503,
            reason: "message log unavailable",
            header: Some(("Retry-After", crate::conn::RETRY_AFTER_SECS.to_string())),
        };
    }
    Action::Append(Append {
        room,
        text: exact(body.message.into_bytes()),
        id: body.id.map(String::into_boxed_str),
        time_ms: from.time_ms,
        json,
        cors: ctx.cors.index(request.headers.origin.as_deref()),
    })
}

/// Whether the publisher wants its answer in JSON (it sent JSON, or accepts it).
fn wants_json(media: form::Media, request: &Request) -> bool {
    media == form::Media::Json
        || request
            .headers
            .accept
            .as_deref()
            .is_some_and(form::accepts_json)
}

/// Decodes the body by its media type (`media`, of its `Content-Type`) and checks the message and its id.
fn read_body(ctx: &Ctx<'_>, media: form::Media, body: Vec<u8>) -> Result<form::Publish, Action> {
    let body = form::publish_body(media, body)
        .map_err(|(status, reason)| Action::reject(status, reason))?;
    if body.message.trim().is_empty() {
        return Err(Action::reject(400, "empty message"));
    }
    if body.message.len() > ctx.config.max_message_bytes {
        return Err(Action::reject(413, "message too large"));
    }
    if body
        .id
        .as_ref()
        .is_some_and(|i| i.is_empty() || i.len() > MAX_ID_BYTES)
    {
        return Err(Action::reject(400, "id must be 1 to 128 bytes"));
    }
    Ok(body)
}

/// The publisher's answer: the message's cursor, as text or JSON.
pub(crate) fn encode_answer(
    persist: Persist,
    cursor: Cursor<'_>,
    json: bool,
    origin: Option<&str>,
) -> Bytes {
    // The cursor and the body in one buffer: the cursor (a header's value) first, the body
    // after it (the cursor again, as text or JSON).
    // Written by hand, not with `write!`: this runs on every publish.
    let mut text = String::with_capacity(2 * cursor_len(cursor) + 16);
    cursor.push_str_to(&mut text);
    let cursor_end = text.len();
    let content_type = if json {
        text.push_str("{\"cursor\":\"");
        cursor.push_str_to(&mut text);
        text.push_str("\"}");
        response::APPLICATION_JSON
    } else {
        cursor.push_str_to(&mut text);
        text.push('\n');
        response::TEXT_PLAIN
    };
    let (cursor, body) = text.split_at(cursor_end);
    let headers = poll_headers(cursor, 0, "", false, origin);
    Response {
        headers: &headers,
        persist,
        ..Response::new(200, Some(content_type), body.as_bytes())
    }
    .encode()
}

/// The length of a cursor's text.
fn cursor_len(cursor: Cursor<'_>) -> usize {
    match cursor {
        Cursor::Start => 1,
        Cursor::At { epoch, seq } => epoch.len() + 1 + response::decimal_len(seq),
    }
}
