//! The append script and the key layout: what one room's keys are called, and which room names
//! and prefixes may be turned into keys at all (see the module docs for why this shape).

use super::log::LogError;

/// The append: create the room's epoch if it has none, answer a known id with its original
/// place, otherwise number, store (with the trim), remember the id, trim the ids, and publish.
///
/// KEYS: meta, log, ids. ARGV: channel, room, time (ms), history cap, text, has id ("0"/"1"),
/// id, time to live of the room's keys in seconds ("0": none). Returns
/// `{epoch, seq, time, duplicate}`.
pub(super) const APPEND_LUA: &str = r#"
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
pub(super) fn valid_epoch(epoch: &[u8]) -> bool {
    (1..=16).contains(&epoch.len())
        && epoch
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The keys of one room and the feed's channel, for a prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    pub(super) prefix: Box<str>,
    pub(super) channel: Box<str>,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Result<Keys, LogError> {
        if !valid_prefix(prefix) {
            return Err(LogError::Invalid("invalid key prefix"));
        }
        Ok(Keys {
            prefix: prefix.into(),
            channel: format!("{prefix}events").into(),
        })
    }

    /// `[meta, log, ids]` of a room, after checking its name.
    pub(super) fn room(&self, room: &str) -> Result<[String; 3], LogError> {
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
