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

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parlor_core::broker::{BrokerEvent, BrokerFailure, BrokerRequest, Entry, History, Stored};
use redis::{Client, Connection, ErrorKind, RedisError, Script, Value};

/// Connect, read and write timeout of every Redis connection unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The append: create the room's epoch if it has none, answer a known id with its original
/// place, otherwise number, store (with the trim), remember the id, trim the ids, and publish.
///
/// KEYS: meta, log, ids. ARGV: channel, room, time (ms), history cap, text, has id ("0"/"1"),
/// id, time to live of the room's keys in seconds ("0": none). Returns
/// `{epoch, seq, time, duplicate}`.
const APPEND_LUA: &str = r#"
local meta, log, ids = KEYS[1], KEYS[2], KEYS[3]
local channel, room, time, maxlen, text, has_id, id, ttl =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1', ARGV[7], tonumber(ARGV[8])

local function b36(n, width)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local s = ''
  repeat
    local d = n % 36
    s = string.sub(digits, d + 1, d + 1) .. s
    n = math.floor(n / 36)
  until n == 0
  while #s < width do s = '0' .. s end
  return s
end

local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return nil
end

local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  -- A new room, or its data was lost: a new epoch from Redis's clock, and nothing left over.
  local now = redis.call('TIME')
  local us = tonumber(now[2])
  epoch = b36(tonumber(now[1]) * 1000 + math.floor(us / 1000), 1) .. b36(us % 1000, 2)
  redis.call('DEL', log, ids)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
end

if has_id then
  local known = redis.call('ZSCORE', ids, id)
  if known then
    local s = string.format('%d', tonumber(known))
    local found = redis.call('XRANGE', log, s .. '-0', s .. '-0')
    if #found == 1 then
      return {epoch, s, field(found[1], 't') or '0', 1}
    end
    redis.call('ZREM', ids, id)
  end
end

local seq = string.format('%d', redis.call('HINCRBY', meta, 'seq', 1))
if has_id then
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-0', 't', time, 'd', text, 'i', id)
  redis.call('ZADD', ids, seq, id)
else
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-0', 't', time, 'd', text)
end
local first = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
if #first == 1 then
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', '(' .. string.match(first[1][1], '^%d+'))
end
if ttl > 0 then
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', log, ttl)
  redis.call('EXPIRE', ids, ttl)
end

local function ns(s) return #s .. ':' .. s .. ',' end
local id_field = '-'
if has_id then id_field = '+' .. id end
redis.call('PUBLISH', channel,
  'parlor1,' .. ns(room) .. ns(epoch) .. ns(seq) .. ns(time) .. ns(id_field) .. ns(text))
return {epoch, seq, time, 0}
"#;

/// Whether `name` is a valid room name: 1–64 of `[A-Za-z0-9_-]` (the core's rule).
pub fn valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `prefix` can prefix Parlor's keys: at most 64 printable ASCII characters without
/// spaces or braces (a brace would change which part of a key is its Redis Cluster hash tag).
pub fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

/// Whether `epoch` is a valid epoch tag: 1–16 of `[0-9a-z]` (the core's cursor rule).
fn valid_epoch(epoch: &[u8]) -> bool {
    (1..=16).contains(&epoch.len())
        && epoch
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The keys of one room and the feed's channel, for a prefix.
#[derive(Clone, Debug)]
struct Keys {
    prefix: Box<str>,
    channel: Box<str>,
}

impl Keys {
    fn new(prefix: &str) -> Result<Keys, LogError> {
        if !valid_prefix(prefix) {
            return Err(LogError::Invalid("invalid key prefix"));
        }
        Ok(Keys {
            prefix: prefix.into(),
            channel: format!("{prefix}events").into(),
        })
    }

    /// `[meta, log, ids]` of a room, after checking its name.
    fn room(&self, room: &str) -> Result<[String; 3], LogError> {
        if !valid_room(room) {
            return Err(LogError::Invalid("invalid room name"));
        }
        let p = &self.prefix;
        Ok([
            format!("{p}room:{{{room}}}:meta"),
            format!("{p}room:{{{room}}}:log"),
            format!("{p}room:{{{room}}}:ids"),
        ])
    }
}

/// Why a log operation failed.
#[derive(Debug)]
pub enum LogError {
    /// A room name or prefix that is not allowed: nothing was sent.
    Invalid(&'static str),
    /// Redis failed (connection, timeout) or answered with an error.
    Redis(RedisError),
    /// Redis answered with something this code does not write (foreign data under our keys).
    Unexpected(&'static str),
}

impl LogError {
    /// Whether the connection is unusable after this error (it must be replaced).
    pub fn is_connection_error(&self) -> bool {
        match self {
            LogError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                    || e.kind() == ErrorKind::ParseError
            }
            LogError::Invalid(_) | LogError::Unexpected(_) => false,
        }
    }

    /// What the core is told about a request that failed with this error.
    pub fn failure(&self) -> BrokerFailure {
        match self {
            LogError::Redis(e) if e.is_connection_refusal() => BrokerFailure::Unavailable,
            _ if self.is_connection_error() => BrokerFailure::Unknown,
            other => BrokerFailure::Rejected(other.to_string().into()),
        }
    }
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Invalid(what) => f.write_str(what),
            LogError::Redis(e) => write!(f, "redis: {e}"),
            LogError::Unexpected(what) => write!(f, "unexpected reply from redis: {what}"),
        }
    }
}

impl std::error::Error for LogError {}

impl From<RedisError> for LogError {
    fn from(e: RedisError) -> LogError {
        LogError::Redis(e)
    }
}

/// A blocking connection to the log in Redis: one node's view of every room.
pub struct RedisLog {
    conn: Connection,
    keys: Keys,
    append: Script,
    /// Seconds the room's keys live after its last append (0: forever).
    room_ttl_secs: u64,
}

impl RedisLog {
    /// Connects to `url` (`redis://HOST:PORT[/DB]`) with [`DEFAULT_TIMEOUT`]s; `prefix` starts
    /// every key (see the module docs).
    pub fn connect(url: &str, prefix: &str) -> Result<RedisLog, LogError> {
        RedisLog::connect_timeout(url, prefix, DEFAULT_TIMEOUT)
    }

    /// [`RedisLog::connect`] with another connect, read and write timeout.
    pub fn connect_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisLog, LogError> {
        let keys = Keys::new(prefix)?;
        let client = Client::open(url)?;
        RedisLog::open(&client, keys, timeout)
    }

    fn open(client: &Client, keys: Keys, timeout: Duration) -> Result<RedisLog, LogError> {
        let timeout = nonzero(timeout);
        let conn = client.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        Ok(RedisLog {
            conn,
            keys,
            append: Script::new(APPEND_LUA),
            room_ttl_secs: 0,
        })
    }

    /// Makes every later append renew a time to live on its room's keys (rounded up to whole
    /// seconds); `None` (the default) keeps rooms until Redis loses them.
    pub fn set_room_ttl(&mut self, ttl: Option<Duration>) {
        self.room_ttl_secs = ttl.map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    }

    /// The Pub/Sub channel that carries every append.
    pub fn channel(&self) -> &str {
        &self.keys.channel
    }

    /// Appends a message to `room` (creating the room and its epoch if Redis has none), keeps
    /// about `history_messages` of the room's messages, and notifies every node, atomically.
    /// With `id`, a message already retained with that id is not appended again: its place is
    /// returned with `duplicate` set.
    pub fn append(
        &mut self,
        room: &str,
        text: &[u8],
        id: Option<&str>,
        time_ms: u64,
        history_messages: usize,
    ) -> Result<Stored, LogError> {
        let [meta, log, ids] = self.keys.room(room)?;
        let reply: Value = self
            .append
            .key(meta)
            .key(log)
            .key(ids)
            .arg(&*self.keys.channel)
            .arg(room)
            .arg(time_ms)
            .arg(history_messages.max(1))
            .arg(text)
            .arg(if id.is_some() { "1" } else { "0" })
            .arg(id.unwrap_or(""))
            .arg(self.room_ttl_secs)
            .invoke(&mut self.conn)?;
        let Value::Array(items) = reply else {
            return Err(LogError::Unexpected("append reply is not an array"));
        };
        let [epoch, seq, time, duplicate] = <[Value; 4]>::try_from(items)
            .map_err(|_| LogError::Unexpected("append reply is not four values"))?;
        let epoch = text_of(&epoch)
            .filter(|e| valid_epoch(e.as_bytes()))
            .ok_or(LogError::Unexpected("room epoch"))?;
        Ok(Stored {
            epoch: epoch.into(),
            seq: number(&seq).ok_or(LogError::Unexpected("sequence number"))?,
            time_ms: number(&time).ok_or(LogError::Unexpected("message time"))?,
            duplicate: number(&duplicate) == Some(1),
        })
    }

    /// Reads `room`'s epoch and bounds and its messages with `seq > after_seq`, oldest first,
    /// at most `limit` (0: only the epoch and bounds), in one atomic transaction.
    pub fn fetch(&mut self, room: &str, after_seq: u64, limit: usize) -> Result<History, LogError> {
        let [meta, log, _] = self.keys.room(room)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HMGET")
            .arg(&meta)
            .arg("epoch")
            .arg("seq")
            .cmd("XRANGE")
            .arg(&log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        if limit > 0 && after_seq < u64::MAX {
            // COUNT is a signed 64-bit integer in Redis.
            let count = u64::try_from(limit)
                .unwrap_or(u64::MAX)
                .min(i64::MAX as u64);
            pipe.cmd("XRANGE")
                .arg(&log)
                .arg(format!("{}-0", after_seq + 1))
                .arg("+")
                .arg("COUNT")
                .arg(count);
        }
        let replies: Vec<Value> = pipe.query(&mut self.conn)?;
        let mut replies = replies.into_iter();
        let head = replies.next().ok_or(LogError::Unexpected("fetch reply"))?;
        let Value::Array(head) = head else {
            return Err(LogError::Unexpected("room metadata"));
        };
        let mut head = head.into_iter();
        let epoch = head.next().unwrap_or(Value::Nil);
        let last = head.next().unwrap_or(Value::Nil);
        if epoch == Value::Nil {
            // Nothing of the room (any entries left are orphans the next append deletes).
            return Ok(History {
                epoch: None,
                first_seq: 1,
                last_seq: 0,
                messages: Vec::new(),
            });
        }
        let epoch = text_of(&epoch)
            .filter(|e| valid_epoch(e.as_bytes()))
            .ok_or(LogError::Unexpected("room epoch"))?;
        let last_seq = number(&last).ok_or(LogError::Unexpected("last sequence number"))?;
        let oldest = entries(replies.next().ok_or(LogError::Unexpected("fetch reply"))?)?;
        let first_seq = oldest.first().map_or(last_seq + 1, |e| e.seq);
        let messages = match replies.next() {
            Some(range) => entries(range)?,
            None => Vec::new(),
        };
        Ok(History {
            epoch: Some(epoch.into()),
            first_seq,
            last_seq,
            messages,
        })
    }
}

/// A zero timeout means "block forever" to the standard library: never allow it.
fn nonzero(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

/// A bulk or simple string reply as UTF-8 text.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An integer reply, or a string reply holding a decimal `u64`.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => parse_u64(b),
        Value::SimpleString(s) => parse_u64(s.as_bytes()),
        _ => None,
    }
}

/// A decimal `u64` of 1–20 digits.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Stream entries (`XRANGE` reply) as messages.
fn entries(reply: Value) -> Result<Vec<Entry>, LogError> {
    let Value::Array(items) = reply else {
        return Err(LogError::Unexpected("stream range"));
    };
    items.into_iter().map(entry).collect()
}

/// One stream entry `[id, [field, value, ...]]` as a message.
fn entry(item: Value) -> Result<Entry, LogError> {
    const BAD: LogError = LogError::Unexpected("stream entry");
    let Value::Array(parts) = item else {
        return Err(BAD);
    };
    let [id, fields] = <[Value; 2]>::try_from(parts).map_err(|_| BAD)?;
    let Value::BulkString(id) = id else {
        return Err(BAD);
    };
    let seq = id
        .strip_suffix(b"-0")
        .and_then(parse_u64)
        .ok_or(LogError::Unexpected("stream entry id"))?;
    let Value::Array(fields) = fields else {
        return Err(BAD);
    };
    let (mut time_ms, mut text, mut msg_id) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let (Value::BulkString(name), Value::BulkString(value)) = (name, value) else {
            return Err(BAD);
        };
        match name.as_slice() {
            b"t" => time_ms = parse_u64(&value),
            b"d" => text = Some(Bytes::from(value)),
            b"i" => msg_id = Some(String::from_utf8(value).map_err(|_| BAD)?.into()),
            _ => {}
        }
    }
    Ok(Entry {
        seq,
        time_ms: time_ms.ok_or(BAD)?,
        text: text.ok_or(BAD)?,
        id: msg_id,
    })
}

/// Encodes an appended message as the append script publishes it (for tests and tools).
///
/// `parlor1,` then six netstrings (`<length>:<bytes>,`): room, epoch, seq (decimal), time
/// (decimal ms), id (`-` for none, `+` and the id otherwise) and text. Lengths make any byte
/// safe in any field; the text goes last.
pub fn encode_event(
    room: &str,
    epoch: &str,
    seq: u64,
    time_ms: u64,
    id: Option<&str>,
    text: &[u8],
) -> Vec<u8> {
    let mut out = b"parlor1,".to_vec();
    let id_field = id.map_or_else(|| "-".to_string(), |id| format!("+{id}"));
    let seq = seq.to_string();
    let time = time_ms.to_string();
    let fields: [&[u8]; 6] = [
        room.as_bytes(),
        epoch.as_bytes(),
        seq.as_bytes(),
        time.as_bytes(),
        id_field.as_bytes(),
        text,
    ];
    for field in fields {
        out.extend_from_slice(field.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(field);
        out.push(b',');
    }
    out
}

/// Decodes a payload of the feed (see [`encode_event`]) into a [`BrokerEvent::Message`];
/// `None` for anything malformed (another program's message on the channel, say).
pub fn decode_event(payload: &[u8]) -> Option<BrokerEvent> {
    let mut rest = payload.strip_prefix(b"parlor1,")?;
    let room = std::str::from_utf8(netstring(&mut rest)?).ok()?;
    let epoch = netstring(&mut rest)?;
    let seq = parse_u64(netstring(&mut rest)?)?;
    let time_ms = parse_u64(netstring(&mut rest)?)?;
    let id = match netstring(&mut rest)? {
        b"-" => None,
        [b'+', id @ ..] => Some(std::str::from_utf8(id).ok()?.into()),
        _ => return None,
    };
    let text = netstring(&mut rest)?;
    if !rest.is_empty() || !valid_room(room) || !valid_epoch(epoch) {
        return None;
    }
    Some(BrokerEvent::Message {
        room: room.into(),
        epoch: std::str::from_utf8(epoch).ok()?.into(),
        seq,
        time_ms,
        text: Bytes::copy_from_slice(text),
        id,
    })
}

/// Takes one netstring `<len>:<bytes>,` off the front of `input`.
fn netstring<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let colon = input.iter().take(11).position(|&b| b == b':')?;
    let len = usize::try_from(parse_u64(&input[..colon])?).ok()?;
    let body = &input[colon + 1..];
    if body.len() <= len || body[len] != b',' {
        return None;
    }
    *input = &body[len + 1..];
    Some(&body[..len])
}

/// How a [`Broker`] reaches Redis and behaves when it cannot.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Starts every key and the channel (default `parlor:`).
    pub prefix: String,
    /// About how many messages each room keeps (`--history-messages`; at least this many).
    pub history_messages: usize,
    /// Connect, read and write timeout of each Redis connection.
    pub timeout: Duration,
    /// First delay before reconnecting after a failed attempt; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// The feed pings Redis after this long without traffic, to notice a Redis that stopped
    /// answering (a dead one is noticed at once by the closed connection).
    pub ping_interval: Duration,
    /// Requests waiting for the worker beyond this many are answered `Overloaded` at once.
    pub queue: usize,
    /// With `Some`, a room's keys expire this long after its last append (see the module docs).
    pub room_ttl: Option<Duration>,
}

impl BrokerConfig {
    /// The defaults: [`DEFAULT_TIMEOUT`], backoff from 100 ms to 5 s, a ping after 5 s of
    /// silence, a queue of 4096 requests, rooms kept without expiry.
    pub fn new(url: &str, prefix: &str, history_messages: usize) -> BrokerConfig {
        BrokerConfig {
            url: url.to_string(),
            prefix: prefix.to_string(),
            history_messages,
            timeout: DEFAULT_TIMEOUT,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            queue: 4096,
            room_ttl: None,
        }
    }
}

/// The broker service: carries out [`BrokerRequest`]s against Redis and reports
/// [`BrokerEvent`]s, for an adapter's event loop.
///
/// Two threads: a worker that executes requests one at a time, in order, on its own
/// connection, and a subscriber that listens to the feed on another. Both reconnect with
/// backoff; neither panics on a Redis error.
///
/// The adapter's side is non-blocking: [`Broker::submit`] queues a request; `notify` (given at
/// spawn) is called from a broker thread when events are waiting, and the adapter then calls
/// [`Broker::try_recv`] until it returns `None` (in its own loop: a `mio::Waker` wakes mio's
/// poll, an async event or channel wakes a smol task). Notifications are coalesced: after a
/// `notify`, the next one comes only once `try_recv` has returned `None`, so the adapter must
/// drain fully each time it is woken. `notify` must be quick and must not block or call into
/// the broker (it may run on the adapter's own thread too, when `submit` answers at once).
///
/// Requests wait in a bounded queue ([`BrokerConfig::queue`]); events wait in an unbounded one
/// until drained, since feed messages cannot be refused (a slow feed is cut by Redis's own
/// Pub/Sub output limit instead, which shows as `Down`, then `Up` and a catch-up).
pub struct Broker {
    requests: Option<SyncSender<BrokerRequest>>,
    events: Receiver<BrokerEvent>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Broker {
    /// Spawns the service for `url` with the defaults of [`BrokerConfig::new`].
    pub fn spawn(
        url: &str,
        prefix: &str,
        history_messages: usize,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Broker> {
        Broker::spawn_with(BrokerConfig::new(url, prefix, history_messages), notify)
    }

    /// Spawns the service. Fails only for an invalid URL or prefix, or when a thread cannot be
    /// started; an unreachable Redis is not an error here (the service starts down and keeps
    /// trying, reporting `Up` once it gets through).
    pub fn spawn_with(
        config: BrokerConfig,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> io::Result<Broker> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let keys = Keys::new(&config.prefix).map_err(|e| invalid(e.to_string()))?;
        let client = Client::open(config.url.as_str())
            .map_err(|e| invalid(format!("invalid Redis URL: {e}")))?;
        let (events_tx, events) = mpsc::channel();
        let (requests, requests_rx) = mpsc::sync_channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            events: events_tx,
            pending: AtomicBool::new(false),
            notify: Box::new(notify),
            health: Mutex::new(Health::default()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            feed_breaks: AtomicU64::new(0),
        });
        let mut broker = Broker {
            requests: Some(requests),
            events,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let worker = Worker {
            shared: Arc::clone(&shared),
            client: client.clone(),
            keys: keys.clone(),
            config: config.clone(),
            log: None,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            retry_at: Instant::now(),
            seen_breaks: 0,
        };
        broker.threads.push(
            std::thread::Builder::new()
                .name("parlor-redis-worker".into())
                .spawn(move || worker.run(requests_rx))?,
        );
        let feed = Feed {
            shared,
            client,
            channel: keys.channel.clone(),
            config,
        };
        broker.threads.push(
            std::thread::Builder::new()
                .name("parlor-redis-feed".into())
                .spawn(move || feed.run())?,
        );
        Ok(broker)
    }

    /// Queues a request for the worker without blocking. If the queue is full (or the worker is
    /// gone), the request is answered at once with a failure event.
    pub fn submit(&self, request: BrokerRequest) {
        let Some(requests) = &self.requests else {
            return;
        };
        let (request, failure) = match requests.try_send(request) {
            Ok(()) => return,
            Err(TrySendError::Full(r)) => (r, BrokerFailure::Overloaded),
            Err(TrySendError::Disconnected(r)) => (r, BrokerFailure::Unavailable),
        };
        self.shared.emit(failed(&request, failure));
    }

    /// The next event, if one is waiting. Call until `None` after each `notify`.
    pub fn try_recv(&self) -> Option<BrokerEvent> {
        if let Ok(event) = self.events.try_recv() {
            return Some(event);
        }
        // Re-arm the notification, then look once more: an event sent just before the re-arm
        // found it still set and did not notify, so it must be taken here.
        self.shared.pending.store(false, Ordering::SeqCst);
        self.events.try_recv().ok()
    }

    /// Every event waiting now.
    pub fn drain(&self) -> impl Iterator<Item = BrokerEvent> + '_ {
        std::iter::from_fn(|| self.try_recv())
    }

    /// Stops both threads and waits for them (at most about one timeout: a request in flight
    /// finishes or times out first).
    pub fn shutdown(mut self) {
        self.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn stop(&mut self) {
        self.requests = None; // the worker sees the queue close
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Broker {
    /// Stops the threads without waiting: they end on their own within about one timeout.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The failure event answering `request`.
fn failed(request: &BrokerRequest, failure: BrokerFailure) -> BrokerEvent {
    match request {
        BrokerRequest::Append { token, .. } => BrokerEvent::Appended {
            token: *token,
            result: Err(failure),
        },
        BrokerRequest::Fetch { token, room, .. } => BrokerEvent::Fetched {
            token: *token,
            room: room.clone(),
            result: Err(failure),
        },
    }
}

/// What the threads and the handle share.
struct Shared {
    events: Sender<BrokerEvent>,
    /// A notification is outstanding: the adapter has not drained since.
    pending: AtomicBool,
    notify: Box<dyn Fn() + Send + Sync>,
    health: Mutex<Health>,
    stopped: Mutex<bool>,
    wake: Condvar,
    /// How many times the feed's connection broke: the worker's connection, to the same
    /// Redis, is then suspect too and is replaced before the next request.
    feed_breaks: AtomicU64,
}

/// Which connection a health report is about.
#[derive(Clone, Copy)]
enum Part {
    Commands,
    Feed,
}

#[derive(Default)]
struct Health {
    commands: bool,
    feed: bool,
    /// What the core was last told (starts down).
    up: bool,
}

impl Shared {
    fn emit(&self, event: BrokerEvent) {
        // A send fails only when the handle is gone, and then nobody is listening.
        let _ = self.events.send(event);
        if !self.pending.swap(true, Ordering::SeqCst) {
            (self.notify)();
        }
    }

    /// Records a connection's state and reports `Up`/`Down` on a change of the whole. The lock
    /// is held while emitting, so the reports are in the order of the changes.
    fn set_health(&self, part: Part, ok: bool) {
        let mut health = lock(&self.health);
        match part {
            Part::Commands => health.commands = ok,
            Part::Feed => health.feed = ok,
        }
        let up = health.commands && health.feed;
        if up != health.up {
            health.up = up;
            self.emit(if up {
                BrokerEvent::Up
            } else {
                BrokerEvent::Down
            });
        }
    }

    fn stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Sleeps for `d` unless stopped first. Returns whether the service is stopping.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = lock(&self.stopped);
        loop {
            let now = Instant::now();
            if *stopped || now >= deadline {
                return *stopped;
            }
            stopped = match self.wake.wait_timeout(stopped, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Locks a mutex, ignoring poisoning (the data are flags and a sender, valid either way).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Capped exponential backoff with ±25 % jitter, so nodes do not reconnect in lockstep.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let min = nonzero(min);
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = RandomState::new().build_hasher().finish() % 501; // 0..=500 per mille
        base * (750 + jitter as u32) / 1000
    }
}

/// The worker thread: executes requests in order on its own connection.
struct Worker {
    shared: Arc<Shared>,
    client: Client,
    keys: Keys,
    config: BrokerConfig,
    log: Option<RedisLog>,
    backoff: Backoff,
    /// While disconnected: no attempt to reconnect before this.
    retry_at: Instant,
    /// `feed_breaks` when the current connection was made.
    seen_breaks: u64,
}

impl Worker {
    fn run(mut self, requests: Receiver<BrokerRequest>) {
        loop {
            self.ensure_connected();
            let request = if self.log.is_some() {
                match requests.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                let wait = self.retry_at.saturating_duration_since(Instant::now());
                match requests.recv_timeout(wait) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            let event = self.execute(&request);
            self.shared.emit(event);
        }
    }

    /// Replaces a suspect connection, and connects when the backoff allows. Returns whether a
    /// connection is ready.
    fn ensure_connected(&mut self) -> bool {
        if self.log.is_some() && self.shared.feed_breaks.load(Ordering::SeqCst) != self.seen_breaks
        {
            self.log = None;
            self.retry_at = Instant::now();
        }
        if self.log.is_none() && Instant::now() >= self.retry_at {
            let breaks = self.shared.feed_breaks.load(Ordering::SeqCst);
            match RedisLog::open(&self.client, self.keys.clone(), self.config.timeout) {
                Ok(mut log) => {
                    log.set_room_ttl(self.config.room_ttl);
                    self.log = Some(log);
                    self.seen_breaks = breaks;
                    self.backoff.reset();
                    self.shared.set_health(Part::Commands, true);
                }
                Err(_) => {
                    self.retry_at = Instant::now() + self.backoff.next_delay();
                    self.shared.set_health(Part::Commands, false);
                }
            }
        }
        self.log.is_some()
    }

    /// Carries out one request and returns its answer. After a connection error it is retried
    /// once on a fresh connection when that cannot publish twice: reads, and appends with an
    /// id (if the first try was stored after all, the retry answers `duplicate` with the same
    /// place, which is the right answer for the publisher).
    fn execute(&mut self, request: &BrokerRequest) -> BrokerEvent {
        let retry_safe = match request {
            BrokerRequest::Append { id, .. } => id.is_some(),
            BrokerRequest::Fetch { .. } => true,
        };
        let mut tries = if retry_safe { 2 } else { 1 };
        loop {
            tries -= 1;
            if !self.ensure_connected() {
                return failed(request, BrokerFailure::Unavailable);
            }
            let Some(log) = self.log.as_mut() else {
                return failed(request, BrokerFailure::Unavailable);
            };
            let event = match request {
                BrokerRequest::Append {
                    token,
                    room,
                    text,
                    id,
                    time_ms,
                } => {
                    let result = log.append(
                        room,
                        text,
                        id.as_deref(),
                        *time_ms,
                        self.config.history_messages,
                    );
                    result.map(|stored| BrokerEvent::Appended {
                        token: *token,
                        result: Ok(stored),
                    })
                }
                BrokerRequest::Fetch {
                    token,
                    room,
                    after_seq,
                    limit,
                } => log
                    .fetch(room, *after_seq, *limit)
                    .map(|history| BrokerEvent::Fetched {
                        token: *token,
                        room: room.clone(),
                        result: Ok(history),
                    }),
            };
            match event {
                Ok(event) => return event,
                Err(e) if e.is_connection_error() => {
                    // The connection is gone: the next attempt reconnects at once.
                    self.log = None;
                    self.retry_at = Instant::now();
                    self.backoff.reset();
                    self.shared.set_health(Part::Commands, false);
                    if tries == 0 {
                        return failed(request, e.failure());
                    }
                }
                Err(e) => return failed(request, e.failure()),
            }
        }
    }
}

/// The subscriber thread: listens to the feed and reports its messages and its health.
struct Feed {
    shared: Arc<Shared>,
    client: Client,
    channel: Box<str>,
    config: BrokerConfig,
}

/// How often a quiet feed checks whether the service is stopping.
const FEED_TICK: Duration = Duration::from_millis(250);

impl Feed {
    fn run(self) {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        while !self.shared.stopped() {
            let timeout = nonzero(self.config.timeout);
            match self.client.get_connection_with_timeout(timeout) {
                Ok(mut conn) => {
                    let listened = self.listen(&mut conn, &mut backoff);
                    self.shared.feed_breaks.fetch_add(1, Ordering::SeqCst);
                    self.shared.set_health(Part::Feed, false);
                    // After a connection that worked, the backoff starts again from its
                    // minimum: a short pause, never a tight reconnect loop.
                    if listened.is_ok() || self.shared.sleep(backoff.next_delay()) {
                        return;
                    }
                }
                Err(_) => {
                    self.shared.set_health(Part::Feed, false);
                    if self.shared.sleep(backoff.next_delay()) {
                        return;
                    }
                }
            }
        }
    }

    /// Subscribes and forwards messages until the connection fails (`Err`) or the service
    /// stops (`Ok`).
    fn listen(&self, conn: &mut Connection, backoff: &mut Backoff) -> Result<(), RedisError> {
        let timeout = nonzero(self.config.timeout);
        conn.set_read_timeout(Some(timeout))?;
        conn.set_write_timeout(Some(timeout))?;
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe(&*self.channel)?;
        pubsub.set_read_timeout(Some(FEED_TICK.min(timeout)))?;
        backoff.reset();
        // Up only now: what is appended from here on reaches this feed.
        self.shared.set_health(Part::Feed, true);
        let mut quiet_since = Instant::now();
        loop {
            if self.shared.stopped() {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    quiet_since = Instant::now();
                    if let Some(event) = decode_event(msg.get_payload_bytes()) {
                        self.shared.emit(event);
                    }
                }
                Err(e) if e.is_timeout() => {
                    if quiet_since.elapsed() >= self.config.ping_interval {
                        pubsub.set_read_timeout(Some(timeout))?;
                        pubsub.ping::<Value>()?;
                        pubsub.set_read_timeout(Some(FEED_TICK.min(timeout)))?;
                        quiet_since = Instant::now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_and_prefix_rules() {
        assert!(valid_room("main") && valid_room("A-b_9") && valid_room(&"a".repeat(64)));
        assert!(!valid_room("") && !valid_room(&"a".repeat(65)) && !valid_room("a}b"));
        assert!(!valid_room("a b") && !valid_room("é") && !valid_room("a:b"));
        assert!(valid_prefix("parlor:") && valid_prefix("") && valid_prefix("app/1:"));
        assert!(!valid_prefix("a{b") && !valid_prefix("a}") && !valid_prefix("a b"));
        assert!(!valid_prefix(&"p".repeat(65)) && !valid_prefix("a\nb"));
    }

    #[test]
    fn key_layout() {
        let keys = Keys::new("parlor:").unwrap();
        assert_eq!(&*keys.channel, "parlor:events");
        assert_eq!(
            keys.room("main").unwrap(),
            [
                "parlor:room:{main}:meta".to_string(),
                "parlor:room:{main}:log".to_string(),
                "parlor:room:{main}:ids".to_string(),
            ]
        );
        assert!(matches!(keys.room("a}b"), Err(LogError::Invalid(_))));
        assert!(matches!(Keys::new("x{"), Err(LogError::Invalid(_))));
    }

    #[test]
    fn event_round_trip_with_awkward_bytes() {
        let text = b"a,b:c\0\xff 10:x, parlor1,";
        let payload = encode_event("r-1", "abc12", 42, 1_700_000_000_123, Some("i:d,"), text);
        assert_eq!(
            decode_event(&payload),
            Some(BrokerEvent::Message {
                room: "r-1".into(),
                epoch: "abc12".into(),
                seq: 42,
                time_ms: 1_700_000_000_123,
                text: Bytes::from_static(text),
                id: Some("i:d,".into()),
            })
        );
        let none = encode_event("main", "z", 1, 0, None, b"");
        assert!(matches!(
            decode_event(&none),
            Some(BrokerEvent::Message { id: None, .. })
        ));
    }

    #[test]
    fn malformed_events_are_dropped() {
        let good = encode_event("main", "k0", 7, 9, Some("x"), b"hello");
        // Every truncation, and every single-byte corruption, decodes to nothing or to a
        // well-formed message: never a panic.
        for cut in 0..good.len() {
            assert_eq!(decode_event(&good[..cut]), None, "cut at {cut}");
        }
        for i in 0..good.len() {
            for b in [b'0', b'9', b':', b',', b'{', 0xff] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = decode_event(&bad);
            }
        }
        let mut trailing = good.clone();
        trailing.push(b'x');
        assert_eq!(decode_event(&trailing), None);
        for bad in [
            encode_event("a b", "k0", 1, 1, None, b"x"),
            encode_event("main", "K0", 1, 1, None, b"x"),
            encode_event("main", "", 1, 1, None, b"x"),
            b"parlor1,99999999999999999999:".to_vec(),
            b"parlor2,4:main,2:k0,1:1,1:1,1:-,1:x,".to_vec(),
            b"parlor1,4:main,2:k0,1:1,1:1,1:?,1:x,".to_vec(),
            b"parlor1,4:main,2:k0,2:-1,1:1,1:-,1:x,".to_vec(),
        ] {
            assert_eq!(
                decode_event(&bad),
                None,
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (d, base) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let base = Duration::from_millis(base);
            assert!(
                *d >= base * 3 / 4 && *d <= base * 5 / 4,
                "{d:?} for {base:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }

    #[test]
    fn failures_by_fault() {
        let refused = LogError::Redis(RedisError::from(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(refused.failure(), BrokerFailure::Unavailable);
        let timeout = LogError::Redis(RedisError::from(io::Error::from(io::ErrorKind::TimedOut)));
        assert!(timeout.is_connection_error());
        assert_eq!(timeout.failure(), BrokerFailure::Unknown);
        let refusal = LogError::Redis(RedisError::from((ErrorKind::ResponseError, "OOM")));
        assert!(!refusal.is_connection_error());
        assert!(matches!(refusal.failure(), BrokerFailure::Rejected(_)));
        assert!(matches!(
            LogError::Invalid("invalid room name").failure(),
            BrokerFailure::Rejected(_)
        ));
    }
}
