//! The feed's payload: how the append script encodes an appended message on the channel, and
//! how a node decodes it back into a [`BrokerEvent::Message`](parlor_core::broker::BrokerEvent).

use super::log::parse_u64;
use super::script::{valid_epoch, valid_room};
use bytes::Bytes;
use parlor_core::broker::BrokerEvent;

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
pub(super) fn netstring<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let colon = input.iter().take(11).position(|&b| b == b':')?;
    let len = usize::try_from(parse_u64(&input[..colon])?).ok()?;
    let body = &input[colon + 1..];
    if body.len() <= len || body[len] != b',' {
        return None;
    }
    *input = &body[len + 1..];
    Some(&body[..len])
}
