//! `GET /subscribe`: answer at once with what the room has after the cursor, or hold the poll.

use std::borrow::Cow;

use crate::batch::Batch;
use crate::cursor::Since;
use crate::form;
use crate::http::Request;
use crate::room::{Rooms, Shared};
use crate::routes::{open_room, read_from, Action, Ctx, Wait};

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
        Ok(None) => request.headers.last_event_id.as_deref().map(Cow::Borrowed),
        Err(()) => return Action::reject(400, "invalid cursor"),
    };
    // A poll holds a slot: a foreign page may not hold them any more than publish.
    let what = "cross-origin subscribe not allowed";
    let (room_i, since) = match open_room(ctx, rooms, request, since.as_deref(), what) {
        Ok(opened) => opened,
        Err(action) => return action,
    };
    let room = rooms.get(room_i);
    if let Some(load) = ctx.log.needs_load(room, since) {
        return Action::Load { room: room_i, load };
    }
    let (after, gap) = match read_from(room, since) {
        Ok(start) => start,
        Err(action) => return action,
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
