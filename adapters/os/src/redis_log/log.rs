//! [`RedisLog`]: one connection's worth of the log's operations (append, fetch, subscribe),
//! with the replies read into the core's [`parlor_core::broker`] types, and [`LogError`].

use std::time::Duration;

use super::script::{valid_epoch, Keys, APPEND_LUA};
use super::DEFAULT_TIMEOUT;
use bytes::Bytes;
use parlor_core::broker::{BrokerFailure, Entry, History, Stored};
use redis::{Client, Connection, ErrorKind, RedisError, Script, Value};

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
    pub(super) conn: Connection,
    pub(super) keys: Keys,
    pub(super) append: Script,
    /// Seconds the room's keys live after its last append (0: forever).
    pub(super) room_ttl_secs: u64,
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

    pub(super) fn open(
        client: &Client,
        keys: Keys,
        timeout: Duration,
    ) -> Result<RedisLog, LogError> {
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
pub(super) fn nonzero(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

/// A bulk or simple string reply as UTF-8 text.
pub(super) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An integer reply, or a string reply holding a decimal `u64`.
pub(super) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => parse_u64(b),
        Value::SimpleString(s) => parse_u64(s.as_bytes()),
        _ => None,
    }
}

/// A decimal `u64` of 1–20 digits.
pub(super) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Stream entries (`XRANGE` reply) as messages.
pub(super) fn entries(reply: Value) -> Result<Vec<Entry>, LogError> {
    let Value::Array(items) = reply else {
        return Err(LogError::Unexpected("stream range"));
    };
    items.into_iter().map(entry).collect()
}

/// One stream entry `[id, [field, value, ...]]` as a message.
pub(super) fn entry(item: Value) -> Result<Entry, LogError> {
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
