//! `GET /subscribe`: answer at once with what the room has after the cursor, or hold the poll.

use crate::batch::Batch;
use crate::cursor::Since;
use crate::form;
use crate::http::Request;
use crate::room::{Rooms, Shared};
use crate::routes::{check_origin, create_room, room_name, Action, Ctx, Wait};

/// Reads the poll's format, cursor and room; answers with messages, or asks to hold it.
pub(crate) fn handle(ctx: &Ctx<'_>, rooms: &mut Rooms, request: &Request) -> Action {
    let query = request.query().unwrap_or("").as_bytes();
    let json = matches!(form::field(query, "format"), Ok(Some(f)) if f == "json")
        || request
            .headers
            .accept
            .as_deref()
            .is_some_and(form::accepts_json);
    let since = match form::field(query, "since") {
        Ok(Some(s)) => Some(s),
        Ok(None) => request.headers.last_event_id.clone(),
        Err(()) => return Action::reject(400, "invalid cursor"),
    };
    if since.as_deref().is_some_and(|s| !Since::is_valid(s)) {
        return Action::reject(400, "invalid cursor");
    }
    let name = match room_name(request) {
        Ok(n) => n,
        Err(action) => return action,
    };
    // A poll holds a slot: a foreign page may not hold them any more than publish.
    if let Err(action) = check_origin(ctx, request, "cross-origin subscribe not allowed") {
        return action;
    }
    let room_i = match create_room(ctx, rooms, &name) {
        Ok(r) => r,
        Err(action) => return action,
    };
    let room = rooms.get(room_i);
    let since = since.as_deref().and_then(|s| Since::parse(s, &room.epoch));
    if let Some(load) = ctx.log.needs_load(room, since) {
        return Action::Load { room: room_i, load };
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
    // A cursor of another epoch points into a history that is gone (a restart, a lost log):
    // the answer says so, whether it comes now or after the poll is held.
    let reset = since == Some(Since::OtherEpoch);
    let cors = ctx.cors.index(request.headers.origin.as_deref());
    if room.last_seq > after {
        // From the oldest retained message with no gap (`since=0`, the oldest cursor): the
        // answer many clients ask for, encoded once and shared until the room changes.
        let shared_key =
            (json && gap == 0 && !reset && after < room.first_seq()).then_some((ctx.persist, cors));
        if let Some(shared) = room.shared.as_ref().filter(|s| Some(s.key) == shared_key) {
            return Action::Deliver {
                data: shared.data.clone(),
                messages: shared.messages,
            };
        }
        let batch = Batch {
            gap,
            reset,
            json,
            max: ctx.config.batch_messages,
            budget: ctx.config.batch_budget(),
            persist: ctx.persist,
            origin: ctx.cors.origin(cors),
        };
        let (data, messages) = batch.encode(room, after);
        if let Some(key) = shared_key {
            rooms.get_mut(room_i).shared = Some(Shared {
                key,
                data: data.clone(),
                messages,
            });
        }
        return Action::Deliver { data, messages };
    }
    // Nothing to send yet: hold the poll.
    Action::Hold(Wait {
        room: room_i,
        after,
        since_all: since == Some(Since::All),
        reset,
        json,
        cors,
    })
}
