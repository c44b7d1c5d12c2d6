//! The broker contract: what the core asks of a shared message log, and what comes back.
//!
//! With `--redis`, N Parlor nodes keep their rooms in one shared log (Redis Streams; the
//! implementation is `parlor_os::redis_log`). The core stays sans-IO: the log is one more pair of
//! outputs and inputs of the state machine. The core emits a [`BrokerRequest`]; the adapter hands
//! it to its broker service, which carries it out on another thread and later delivers
//! [`BrokerEvent`]s back to the core, in the order the service produced them. This module holds
//! only the data of that exchange: plain values (`Box<str>`, [`Bytes`], integers), no behaviour.
//!
//! ## Rooms, epochs, cursors
//! Each room in the log has an **epoch**, a short lowercase base-36 string chosen by the log when
//! the room's metadata is created (at its first append), and a **sequence**: messages are
//! numbered 1, 2, 3, … within the epoch, without holes. A cursor is `<epoch>-<seq>` as before; the
//! epoch of a room in the log satisfies the same rule as the in-memory one (1–16 characters of
//! `[0-9a-z]`), so cursors keep one syntax. When the log loses a room's data (a Redis restart
//! without persistence, a flush, an eviction), the next append creates a new epoch and the
//! sequence restarts at 1: a cursor of the old epoch is then detected as such (the reset signal),
//! never mistaken for a position in the new one.
//!
//! ## The exchange
//! * [`BrokerRequest::Append`] → exactly one [`BrokerEvent::Appended`] with the same `token`:
//!   either the stored message's place ([`Stored`]) or a [`BrokerFailure`]. Only an `Ok` means
//!   the message is stored; the core answers the publisher after it, never before.
//! * [`BrokerRequest::Fetch`] → exactly one [`BrokerEvent::Fetched`] with the same `token`.
//! * Every message appended by **any** node, this one included, also arrives once as a
//!   [`BrokerEvent::Message`] from the log's notification feed, per room in sequence order.
//!   `Appended` and the `Message` of the same append travel different paths, so either may come
//!   first: the core deduplicates by `(room, epoch, seq)`.
//! * The feed is lossy across disconnections: after [`BrokerEvent::Down`] and before the next
//!   [`BrokerEvent::Up`], messages may be appended that the feed never delivers. `Up` is only
//!   reported once the feed is listening again, so a `Fetch` issued after `Up` for the last
//!   sequence the core saw catches up without a hole. Likewise a `Message` whose `seq` is more
//!   than one past the last one seen in its room (or whose epoch changed) means a gap that a
//!   `Fetch` fills.
//! * The service starts **down**; it reports `Up` when both its command connection and its feed
//!   work, and `Down` when either fails. Transitions only: `Up` and `Down` alternate.
//!
//! ## What the core does with it
//! The adapter drains [`Server::poll_broker`](crate::Server::poll_broker) after every input and
//! feeds every event to [`Server::handle_broker`](crate::Server::handle_broker) (only with
//! [`Config::shared_log`](crate::Config::shared_log); in memory the log is inside the core and
//! no request is ever made). The core's side (`log.rs`, `server/shared.rs`):
//! * A publish becomes an `Append`; its connection waits (no later request on it is read) until
//!   `Appended`: `Ok` answers `200` with `<epoch>-<seq>` (a duplicate: the original place), a
//!   failure or the `--broker-timeout` deadline answers `503` with `Retry-After`. While the log
//!   is down (after `Down`, or before the first `Up`) a publish is answered `503` at once.
//! * Each room keeps a cache of the log: a contiguous run of its messages. A `Message` (or an
//!   `Appended(Ok)`, which carries the same message) enters it only as the next sequence number
//!   and is then fanned out to the room's held polls exactly like an in-memory publish; an
//!   older one is a duplicate and dropped; a newer one, or another epoch, issues a `Fetch` after
//!   the cache's last sequence. At most one fetch per room is in flight.
//! * A poll on a room this node has not loaded, with a cursor ahead of the cache, or with a
//!   cursor of another epoch, waits for a fetch and is then routed again from the fresh cache: a
//!   cursor handed out by another node is never read against an unknown or stale room. A
//!   cursor older than the cache gets a fetch of its own (after the cursor, `--batch-messages`
//!   long) and is answered from what the log still holds; the gap signal counts only what the
//!   log no longer has.
//! * `Fetched`: an epoch other than the cache's (or none) empties the cache, after answering the
//!   room's held polls `204` with their unchanged cursor (they come back and get the reset
//!   signal); a `first_seq` past the cache's end (trimmed while this node was away) does the
//!   same (they get the gap signal). What is new is cached and fanned out; if the log holds
//!   more, the core fetches again.
//! * Event streams (`GET /events`) take the same path: a stream on a room this node has not
//!   loaded waits for the fetch; every message entering the cache is one event on every stream
//!   of the room; when the cache is emptied (new epoch, trimmed hole) the streams are ended so
//!   their clients reconnect with `Last-Event-ID` and get the reset or gap event.
//! * `Down`: `/healthz` answers `503`, `/metrics` shows `parlor_broker_up 0`; held polls stay
//!   held and the cache keeps answering. `Up`: every loaded room is fetched after its last
//!   sequence, so what the feed missed meanwhile is delivered.
//!
//! ## What the log does not do
//! The history is capped by count only (approximately, `--history-messages`, at least that many
//! kept); the byte cap of the in-memory history is the core's to apply to what it caches.

use bytes::Bytes;

/// What the core asks the log to do (an output of the core, an input of the broker service).
///
/// `token` is the core's own correlation number: the answer carries it back unchanged. Room
/// names are valid (`[A-Za-z0-9_-]{1,64}`) before a request is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerRequest {
    /// Append one message to `room`, creating the room (and its epoch) if the log has none.
    ///
    /// With `id`, the append is idempotent across all nodes: while a message with the same id is
    /// still in the room's history, nothing is appended and the original message's place is
    /// returned with [`Stored::duplicate`] set. Answered by [`BrokerEvent::Appended`].
    Append {
        /// Correlates the answer.
        token: u64,
        /// The room.
        room: Box<str>,
        /// The message text, as published.
        text: Bytes,
        /// The publisher's idempotency key, if any.
        id: Option<Box<str>>,
        /// When the core received the publish, ms since the Unix epoch; stored with the message.
        time_ms: u64,
    },
    /// Read the messages of `room` with a sequence number above `after_seq`, oldest first, at
    /// most `limit` of them, with the room's epoch and bounds. `limit: 0` reads only the epoch
    /// and bounds (the room's head). Answered by [`BrokerEvent::Fetched`].
    Fetch {
        /// Correlates the answer.
        token: u64,
        /// The room.
        room: Box<str>,
        /// Only messages with `seq > after_seq` (0: from the oldest retained).
        after_seq: u64,
        /// At most this many messages.
        limit: usize,
    },
}

impl BrokerRequest {
    /// The request's correlation token.
    pub fn token(&self) -> u64 {
        match self {
            BrokerRequest::Append { token, .. } | BrokerRequest::Fetch { token, .. } => *token,
        }
    }

    /// The room the request is about.
    pub fn room(&self) -> &str {
        match self {
            BrokerRequest::Append { room, .. } | BrokerRequest::Fetch { room, .. } => room,
        }
    }
}

/// What the broker service reports to the core (an input of the core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerEvent {
    /// The answer to [`BrokerRequest::Append`] with the same `token`.
    Appended {
        /// The request's token.
        token: u64,
        /// Where the message is stored, or why it may not be.
        result: Result<Stored, BrokerFailure>,
    },
    /// A message appended to the log by any node (this one included), from the notification
    /// feed. Per room, messages come in sequence order; a hole means missed messages (see the
    /// module docs).
    Message {
        /// The room.
        room: Box<str>,
        /// The room's epoch when the message was appended.
        epoch: Box<str>,
        /// The message's sequence number in its room and epoch.
        seq: u64,
        /// The time stored with the message, ms since the Unix epoch.
        time_ms: u64,
        /// The message text.
        text: Bytes,
        /// The publisher's idempotency key, if any.
        id: Option<Box<str>>,
    },
    /// The answer to [`BrokerRequest::Fetch`] with the same `token`.
    Fetched {
        /// The request's token.
        token: u64,
        /// The room fetched.
        room: Box<str>,
        /// The room's state and the messages asked for, or why they could not be read.
        result: Result<History, BrokerFailure>,
    },
    /// The log is reachable again and its feed is listening: the core may catch up (fetch after
    /// the last sequence it saw in each room it holds) and accept publishes.
    Up,
    /// The log is unreachable: appends fail until `Up`, and the feed may miss messages.
    Down,
}

/// Where an appended message is stored: its cursor is `<epoch>-<seq>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The room's epoch.
    pub epoch: Box<str>,
    /// The message's sequence number.
    pub seq: u64,
    /// The time stored with the message (the original one for a duplicate).
    pub time_ms: u64,
    /// The id was already in the room's history: nothing was appended, and this is the place of
    /// the message first published with it.
    pub duplicate: bool,
}

/// A room's state in the log and a run of its messages, the answer to a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// The room's epoch; `None` when the log holds nothing of the room (never written, or its
    /// data was lost), in which case every cursor of the room is stale.
    pub epoch: Option<Box<str>>,
    /// The oldest retained sequence number (`last_seq + 1` when nothing is retained). Messages
    /// from `after_seq + 1` to `first_seq - 1` were trimmed: a gap.
    pub first_seq: u64,
    /// The sequence number of the newest message appended in this epoch (0: none).
    pub last_seq: u64,
    /// The messages asked for, oldest first, contiguous.
    pub messages: Vec<Entry>,
}

/// One stored message of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The message's sequence number.
    pub seq: u64,
    /// The time stored with the message, ms since the Unix epoch.
    pub time_ms: u64,
    /// The message text.
    pub text: Bytes,
    /// The publisher's idempotency key, if any.
    pub id: Option<Box<str>>,
}

/// Why a request was not carried out, split by what the core may conclude.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerFailure {
    /// The log is not connected (down, or waiting to reconnect): the request was not sent and
    /// nothing was stored. The publisher gets `503` with `Retry-After`.
    Unavailable,
    /// The service's request queue is full: the request was not sent, nothing was stored.
    Overloaded,
    /// The request was sent but the connection failed or timed out before the answer: an append
    /// may or may not be stored (if it is, its [`BrokerEvent::Message`] still arrives). The
    /// publisher gets `503`; retrying with the same `id` is safe.
    Unknown,
    /// The log answered with an error (out of memory, read-only replica, loading, unexpected
    /// data): nothing was stored. The reason is for logs and metrics.
    Rejected(Box<str>),
}

impl std::fmt::Display for BrokerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerFailure::Unavailable => f.write_str("the message log is unavailable"),
            BrokerFailure::Overloaded => f.write_str("the message log's queue is full"),
            BrokerFailure::Unknown => f.write_str("the message log did not answer in time"),
            BrokerFailure::Rejected(reason) => write!(f, "the message log refused: {reason}"),
        }
    }
}

impl std::error::Error for BrokerFailure {}
