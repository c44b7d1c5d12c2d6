//! `GET /events`: open a Server-Sent Events stream on a room, replaying what the client's cursor
//! has not seen (the bytes are `sse.rs`).

use bytes::Bytes;

use crate::cursor::Since;
use crate::form;
use crate::http::{Request, Version};
use crate::log::Load;
use crate::response::Persist;
use crate::room::Rooms;
use crate::routes::{check_origin, create_room, room_name, Action, Ctx};
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
        Some(id) if !id.is_empty() => Some(id.to_owned()),
        _ => match form::field(query, "since") {
            Ok(s) => s,
            Err(()) => return Action::reject(400, "invalid cursor"),
        },
    };
    if since.as_deref().is_some_and(|s| !Since::is_valid(s)) {
        return Action::reject(400, "invalid cursor");
    }
    let name = match room_name(request) {
        Ok(n) => n,
        Err(action) => return action,
    };
    // A stream holds a slot: a foreign page may not open one any more than publish.
    if let Err(action) = check_origin(ctx, request, "cross-origin stream not allowed") {
        return action;
    }
    let room_i = match create_room(ctx, rooms, &name) {
        Ok(r) => r,
        Err(action) => return action,
    };
    let room = rooms.get(room_i);
    let since = since.as_deref().and_then(|s| Since::parse(s, &room.epoch));
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
    let (after, gap) = match since {
        None => (room.last_seq, 0),
        Some(Since::All) => (0, 0),
        Some(Since::OtherEpoch) => (0, room.first_seq() - 1),
        Some(Since::Seq(s)) if s > room.last_seq => {
            return Action::reject(400, "cursor is ahead of the room")
        }
        Some(Since::Seq(s)) => (s, room.first_seq().saturating_sub(s + 1)),
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
