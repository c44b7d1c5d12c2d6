//! The shared message log in Redis: rooms as Redis Streams, appends by one Lua script, a
//! Pub/Sub feed of every append, and [`Broker`], the service both adapters run to carry out the
//! core's [`BrokerRequest`]s and feed [`BrokerEvent`]s back (the contract is documented in
//! [`parlor_core::broker`]).
//!
//! ## Key layout
//! Every key and the channel start with a prefix (`--redis-prefix`, default `parlor:`; shown
//! here). Room `R` has three keys, named only after the room's name was validated
//! (`[A-Za-z0-9_-]{1,64}`, checked again here before any key is built):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `parlor:room:{R}:meta` | hash | `epoch` (the room's epoch), `seq` (its last sequence number) |
//! | `parlor:room:{R}:log` | stream | one entry per message, entry id `<seq>-0`; fields `t` (time, ms), `d` (the text), `i` (the id, only when given) |
//! | `parlor:room:{R}:ids` | sorted set | the ids of retained messages, scored by their sequence number |
//!
//! and every node listens on one Pub/Sub channel, `parlor:events`, which carries each appended
//! message (room, epoch, seq, time, id, text; the encoding is described at [`encode_event`]).
//!
//! Why this shape, learning from Centrifugo's Redis engine (its stream history keeps exactly
//! this: a stream per channel whose entry ids are the publication offsets, a meta hash with the
//! epoch and top offset, one Lua script that increments, `XADD`s with `MAXLEN` and `PUBLISH`es)
//! and from nchan (message storage plus a Pub/Sub notification per publish):
//! * **The sequence is the stream entry id** (`<seq>-0`), so "messages after seq N" is
//!   `XRANGE log (N+1)-0 + COUNT limit`, a seek rather than a scan, and the stream's own order
//!   is the cursor order. The `MAXLEN ~ history` trim is approximate (Redis trims whole internal
//!   nodes), so at least `history` messages are kept; the first retained id tells the gap.
//! * **The epoch lives with the sequence** in the meta hash, created by the same script that
//!   makes the room's first append. If Redis loses the data (restart without persistence,
//!   `FLUSHALL`, eviction of the hash), the next append sees no epoch, draws a new one from Redis's
//!   own clock (`TIME`: base-36 milliseconds plus two base-36 digits of the microseconds, so a
//!   flush and recreate within the same millisecond still differs) and restarts at 1. Old cursors
//!   then carry an epoch the room no longer has: the reset signal, never a wrong position.
//! * **Idempotency across nodes** is a sorted set `id → seq` checked and written inside the
//!   append script (Redis runs a script atomically, so two nodes racing with one id publish
//!   once). Its scores are sequence numbers, so it is trimmed with `ZREMRANGEBYSCORE` below the
//!   stream's first retained entry: an id is remembered exactly while its message is retained,
//!   as in the in-memory history, and the set never outgrows the stream.
//! * **Append and notify are one script** (`EVALSHA`, loaded on demand by [`redis::Script`]):
//!   nothing can be stored without its notification being published, or published without
//!   being stored, and Pub/Sub delivers in script order, so each room's messages reach every
//!   node in sequence order. A node that was disconnected catches up with `XRANGE` (a fetch).
//! * **One channel for all rooms** rather than one per room: a node needs no subscription
//!   bookkeeping as rooms come and go, there is no window between subscribing to a room and
//!   reading its history in which a message could slip by, and a reconnect re-subscribes once.
//!   The price is that every node receives every room's messages (and drops those of rooms it
//!   does not hold), which suits chat volumes; a per-room scheme would add watch/unwatch
//!   requests to the contract.
//! * **Braces make `R` a Redis Cluster hash tag**, so a room's three keys share one slot (a
//!   script may only touch keys of one slot). All keys reach the script as `KEYS`; room names,
//!   texts and ids reach Redis only as values (`ARGV`), never as script text.
//!
//! A room's footprint is bounded by its history cap. By default its keys never expire; with a
//! room time to live ([`RedisLog::set_room_ttl`], [`BrokerConfig::room_ttl`]) each append
//! renews an `EXPIRE` on all three, so rooms nobody publishes to vanish (as Centrifugo's
//! history TTL does), and their next message starts a new epoch.
//!
//! ## Timeouts and failures
//! Every connection has connect, read and write timeouts ([`DEFAULT_TIMEOUT`]), so a dead or
//! stopped Redis turns into an error after at most that long, never a hang. [`Broker`] turns
//! errors into [`BrokerFailure`]s and `Down` events, reconnects with capped, jittered exponential
//! backoff, and never panics or spins on a Redis error.
//!
//! ## Files
//! `script.rs` (the append script, keys, name rules), `log.rs` ([`RedisLog`]), `codec.rs` (the
//! feed's payload), `service.rs` ([`Broker`] and what its threads share), `threads.rs` (the worker
//! and the feed).
//!
//! [`BrokerRequest`]: parlor_core::broker::BrokerRequest
//! [`BrokerEvent`]: parlor_core::broker::BrokerEvent
//! [`BrokerFailure`]: parlor_core::broker::BrokerFailure

use std::time::Duration;

mod codec;
mod log;
mod script;
mod service;
mod threads;

pub use codec::{decode_event, encode_event};
pub use log::{LogError, RedisLog};
pub use script::{valid_prefix, valid_room};
pub use service::{Broker, BrokerConfig};

/// Connect, read and write timeout of every Redis connection unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests;
