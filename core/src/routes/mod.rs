//! Routing: which route a request names, which methods it allows, and what to do about it.
//!
//! A handler reads the request and the state it needs and returns an [`Action`]: answer these
//! bytes, reject with a status, hold the poll, or deliver a publish. It never touches a
//! connection; the server carries the action out through `conn.rs`, so no route can break a
//! connection invariant. To add a route: a variant of [`Route`], its path and methods in the
//! tables below, and a handler (a file of its own when it is more than a few lines).

pub(crate) mod events;
pub(crate) mod publish;
pub(crate) mod subscribe;

use std::borrow::Cow;

use bytes::Bytes;

use crate::config::Config;
use crate::cors::{self, Cors};
use crate::cursor::Since;
use crate::form;
use crate::forwarded::Client;
use crate::http::{Method, Request};
use crate::log::{Load, Log};
use crate::page::File;
use crate::response::{self, Persist, Response};
use crate::room::{self, Room, Rooms};

/// The routes of the API and the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/`, `/chat.js`, `/chat.css`, `/favicon.svg`, `/favicon.ico`
    Page(File),
    /// `/healthz`
    Healthz,
    /// `/metrics`
    Metrics,
    /// `/subscribe`
    Subscribe,
    /// `/publish`
    Publish,
    /// `/events`
    Events,
}

/// Every route by path.
const PATHS: [(&str, Route); 10] = [
    ("/", Route::Page(File::Index)),
    ("/chat.js", Route::Page(File::Script)),
    ("/chat.css", Route::Page(File::Style)),
    ("/favicon.svg", Route::Page(File::Icon)),
    ("/favicon.ico", Route::Page(File::Icon)),
    ("/healthz", Route::Healthz),
    ("/metrics", Route::Metrics),
    ("/subscribe", Route::Subscribe),
    ("/publish", Route::Publish),
    ("/events", Route::Events),
];

impl Route {
    /// The route at `path`, if there is one.
    pub fn from_path(path: &str) -> Option<Route> {
        PATHS.iter().find(|(p, _)| *p == path).map(|&(_, r)| r)
    }

    /// The methods the route answers, as the `Allow` header lists them (`OPTIONS` aside).
    pub fn allowed(self) -> &'static str {
        match self {
            Route::Page(_) | Route::Healthz | Route::Metrics => "GET, HEAD",
            Route::Subscribe | Route::Events => "GET",
            Route::Publish => "POST",
        }
    }

    /// Whether the route answers `method` (`OPTIONS` is answered separately, as a preflight).
    pub fn allows(self, method: Method) -> bool {
        let allowed = self.allowed();
        match method {
            Method::Get => allowed.contains("GET"),
            Method::Head => allowed.contains("HEAD"),
            Method::Post => allowed == "POST",
            _ => false,
        }
    }
}

/// A poll to hold: it waits in `room` for messages after `after`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    pub room: usize,
    pub after: u64,
    pub since_all: bool,
    /// The poll's cursor was of another epoch (see `batch::Batch::reset`).
    pub reset: bool,
    pub json: bool,
    pub cors: Option<u16>,
}

/// What the server must do with a request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this answer.
    Answer(Bytes),
    /// Send this answer, which carries `messages` messages to a subscriber.
    Deliver { data: Bytes, messages: u64 },
    /// Answer with an error (and one extra header, e.g. `Allow` or `Retry-After`).
    Reject {
        status: u16,
        reason: &'static str,
        header: Option<(&'static str, String)>,
    },
    /// Hold the poll until a message or its deadline.
    Hold(Wait),
    /// Open an event stream: send its start, then every message of its room.
    Stream(events::Stream),
    /// A message was published (`seq`, unless it repeats an id already published): answer the
    /// room's waiters, then send `answer` to the publisher.
    Published {
        room: usize,
        seq: Option<u64>,
        answer: Bytes,
    },
    /// With a shared log: ask the log to append this message; the publisher is answered when
    /// it is stored (or not).
    Append(Append),
    /// With a shared log: the poll cannot be answered from this node's cache yet; it waits
    /// until `room` is loaded, then is routed again. The subscribe handler returns it; the
    /// server's router turns it into [`Action::Park`] with the request.
    Load { room: usize, load: Load },
    /// [`Action::Load`] with the request to route again.
    Park {
        room: usize,
        load: Load,
        request: Box<Request>,
    },
}

/// A message to append to the shared log.
#[derive(Debug)]
pub(crate) struct Append {
    pub room: usize,
    pub text: Bytes,
    pub id: Option<Box<str>>,
    pub time_ms: u64,
    /// The publisher wants its answer in JSON.
    pub json: bool,
    /// Index of the publisher's allow-listed cross-origin `Origin`, if any.
    pub cors: Option<u16>,
}

impl Action {
    /// An error answer without extra headers.
    pub fn reject(status: u16, reason: &'static str) -> Action {
        Action::Reject {
            status,
            reason,
            header: None,
        }
    }
}

/// What every handler may read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub cors: &'a Cors,
    /// The epoch tag of this run: rooms created now number their messages in it.
    pub epoch: &'a str,
    /// The answer's connection header.
    pub persist: Persist,
    /// Who sent the request, and by which origin (forwarded by a trusted proxy, or direct).
    pub client: &'a Client,
    /// The message log's state (in memory, or shared and up or down).
    pub log: &'a Log,
}

/// The room named in the query (default `main`), checked but not created: a room comes into
/// being only for a request that passed every other check ([`create_room`]).
pub(crate) fn room_name(request: &Request) -> Result<Cow<'_, str>, Action> {
    let name = form::field(request.query().unwrap_or("").as_bytes(), "room")
        .map_err(|()| Action::reject(400, "invalid room name"))?;
    let name = name.unwrap_or(Cow::Borrowed("main"));
    if !room::valid_room(&name) {
        return Err(Action::reject(400, "invalid room name"));
    }
    Ok(name)
}

/// The room named `name`, created if needed; `503` when every room is in use.
pub(crate) fn create_room(ctx: &Ctx<'_>, rooms: &mut Rooms, name: &str) -> Result<usize, Action> {
    rooms.create(name, ctx.epoch).ok_or_else(|| Action::Reject {
        status: 503,
        reason: "too many rooms",
        header: Some(("Retry-After", crate::conn::RETRY_AFTER_SECS.to_string())),
    })
}

/// Refuses a cross-origin request that is neither same-origin nor allow-listed (`403`): a
/// publish, or a poll that would hold a slot.
pub(crate) fn check_origin(
    ctx: &Ctx<'_>,
    request: &Request,
    what: &'static str,
) -> Result<(), Action> {
    let Some(origin) = request.headers.origin.as_deref() else {
        return Ok(());
    };
    // The request's own origin: its `Host`, or what a trusted proxy forwarded.
    let site = ctx.client.site(request.headers.host.as_deref());
    if ctx.cors.may_publish(origin, site.as_ref()) {
        Ok(())
    } else {
        Err(Action::reject(403, what))
    }
}

/// Opens the room a poll or a stream reads: checks the cursor (`since`, chosen by the route, as
/// the two differ on which of `since` and `Last-Event-ID` wins), the room name and the origin
/// (`what`: the reason of the `403`), creates the room, and reads the cursor against the room's
/// epoch. The checks run in this order, so the first failure is the one answered.
pub(crate) fn open_room(
    ctx: &Ctx<'_>,
    rooms: &mut Rooms,
    request: &Request,
    since: Option<&str>,
    what: &'static str,
) -> Result<(usize, Option<Since>), Action> {
    if since.is_some_and(|s| !Since::is_valid(s)) {
        return Err(Action::reject(400, "invalid cursor"));
    }
    let name = room_name(request)?;
    check_origin(ctx, request, what)?;
    let room_i = create_room(ctx, rooms, &name)?;
    let since = since.and_then(|s| Since::parse(s, &rooms.get(room_i).epoch));
    Ok((room_i, since))
}

/// Where a reader of `room` with cursor `since` starts: the last sequence number it has seen
/// (`after`; no cursor: the newest) and how many messages it missed that the room no longer
/// holds (`gap`). `400` for a cursor ahead of the room.
pub(crate) fn read_from(room: &Room, since: Option<Since>) -> Result<(u64, u64), Action> {
    Ok(match since {
        None => (room.last_seq, 0),
        Some(Since::All) => (0, 0),
        Some(Since::OtherEpoch) => (0, room.first_seq() - 1),
        Some(Since::Seq(s)) if s > room.last_seq => {
            return Err(Action::reject(400, "cursor is ahead of the room"))
        }
        Some(Since::Seq(s)) => (s, room.first_seq().saturating_sub(s + 1)),
    })
}

/// Answers `OPTIONS`: a CORS preflight from an allow-listed origin gets its permissions, one
/// from any other origin `403`, and a plain `OPTIONS` the `Allow` list.
pub(crate) fn preflight(ctx: &Ctx<'_>, request: &Request, allowed: &'static str) -> Action {
    let requested = request.headers.origin.as_deref();
    let origin = match (requested, ctx.cors.index(requested)) {
        (None, _) => None,
        (Some(_), i @ Some(_)) => ctx.cors.origin(i),
        (Some(_), None) => return Action::reject(403, "cross-origin request not allowed"),
    };
    let mut headers = vec![("Allow", allowed)];
    if let Some(origin) = origin {
        headers.extend(cors::preflight_headers(origin, allowed));
    }
    Action::Answer(
        Response {
            headers: &headers,
            persist: ctx.persist,
            ..Response::new(204, None, b"")
        }
        .encode(),
    )
}

/// `GET /healthz`.
pub(crate) fn healthz(head_only: bool, persist: Persist) -> Bytes {
    Response {
        head_only,
        persist,
        ..Response::new(200, Some(response::TEXT_PLAIN), b"ok\n")
    }
    .encode()
}

/// `GET /metrics`, from the Prometheus text.
pub(crate) fn metrics(text: &[u8], head_only: bool, persist: Persist) -> Bytes {
    Response {
        head_only,
        persist,
        ..Response::new(200, Some("text/plain; version=0.0.4; charset=utf-8"), text)
    }
    .encode()
}
