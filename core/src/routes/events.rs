//! `GET /events`: open a Server-Sent Events stream on a room, replaying what the client's cursor
//! has not seen (the bytes are `sse.rs`).

use std::borrow::Cow;

use bytes::Bytes;

use crate::cursor::Since;
use crate::form;
use crate::http::{Request, Version};
use crate::log::Load;
use crate::response::Persist;
use crate::room::Rooms;
use crate::routes::{open_room, read_from, Action, Ctx};
use crate::sse;

/// A stream to open: its room, its encoding, and its first bytes (head and replay).
#[derive(Debug)]
pub(crate) struct Stream {
    pub room: usize,
    pub json: bool,
    pub chunked: bool,
    /// The head, `retry`/`ready`, and the replayed events.
    pub start: Bytes,
    /// Message events in `start`.
    pub events: u64,
}

/// Reads the stream's format, cursor and room, and encodes its start.
///
/// The cursor is `Last-Event-ID` when the client sends one (what `EventSource` sends when it
/// reconnects, while its URL still carries the `since` it was opened with), else `since`.
pub(crate) fn handle(ctx: &Ctx<'_>, rooms: &mut Rooms, request: &Request) -> Action {
    let query = request.query().unwrap_or("").as_bytes();
    let json = matches!(form::field(query, "format"), Ok(Some(f)) if f == "json");
    let since = match request.headers.last_event_id.as_deref() {
        Some(id) if !id.is_empty() => Some(Cow::Borrowed(id)),
        _ => match form::field(query, "since") {
            Ok(s) => s,
            Err(()) => return Action::reject(400, "invalid cursor"),
        },
    };
    // A stream holds a slot: a foreign page may not open one any more than publish.
    let what = "cross-origin stream not allowed";
    let (room_i, since) = match open_room(ctx, rooms, request, since.as_deref(), what) {
        Ok(opened) => opened,
        Err(action) => return action,
    };
    let room = rooms.get(room_i);
    // With a shared log, a room this node has not loaded (or a cursor it has not heard of yet)
    // waits for the room's fetch. A cursor older than the cache is answered from the cache with
    // its gap: a stream replays what it starts with and then follows the room, so it cannot be
    // fed from a fetched run that may end before the cache begins.
    if ctx.log.needs_load(room, since) == Some(Load::Room) {
        return Action::Load {
            room: room_i,
            load: Load::Room,
        };
    }
    let (after, gap) = match read_from(room, since) {
        Ok(start) => start,
        Err(action) => return action,
    };
    let chunked = request.version == Version::Http11;
    let cors = ctx.cors.index(request.headers.origin.as_deref());
    let start = sse::Start {
        json,
        chunked,
        persist: if chunked { ctx.persist } else { Persist::Close },
        origin: ctx.cors.origin(cors),
        retry_ms: ctx
            .config
            .sse_retry
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
        reset: since == Some(Since::OtherEpoch),
        gap,
        after,
    };
    let (start, events) = start.encode(room);
    Action::Stream(Stream {
        room: room_i,
        json,
        chunked,
        start,
        events,
    })
}
