//! Chunked transfer coding (RFC 9112 §7.1): chunk-size lines with extensions (ignored), chunk
//! data, and the trailer section (parsed and ignored), decoded incrementally.

use super::head::trim;
use super::{HttpError, Limits};

/// Longest chunk-size line (size, extensions, CRLF) the reader accepts.
pub(super) const MAX_CHUNK_LINE: usize = 1024;

/// Where the decoder is within a chunked body.
#[derive(Debug, Clone, Copy)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer fields; the number counts trailer bytes so far.
    Trailer(usize),
}

/// Decodes chunked body bytes from `buf[*pos..]` into `body`. `Ok(true)`: the body (with its
/// trailers) is complete. `Ok(false)`: more bytes are needed.
pub(super) fn read_chunks(
    buf: &[u8],
    pos: &mut usize,
    chunk: &mut Chunk,
    body: &mut Vec<u8>,
    limits: &Limits,
) -> Result<bool, HttpError> {
    loop {
        let data = &buf[*pos..];
        let step = match *chunk {
            Chunk::Size => size_line(data, body.len(), limits)?,
            Chunk::Data(left) => {
                if data.is_empty() {
                    return Ok(false);
                }
                let n = left.min(data.len());
                body.extend_from_slice(&data[..n]);
                let next = if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                };
                Step::Next(n, next)
            }
            Chunk::DataEnd => match data {
                [b'\r', b'\n', ..] => Step::Next(2, Chunk::Size),
                [b'\n', ..] => Step::Next(1, Chunk::Size),
                [] | [b'\r'] => Step::More,
                _ => return Err(HttpError::new(400, "chunk data not followed by CRLF")),
            },
            Chunk::Trailer(seen) => trailer_line(data, seen, limits)?,
        };
        match step {
            Step::More => return Ok(false),
            Step::Next(n, next) => {
                *pos += n;
                *chunk = next;
            }
            Step::Done(n) => {
                *pos += n;
                return Ok(true);
            }
        }
    }
}

/// What one step of the decoder did.
enum Step {
    /// Nothing: more bytes are needed.
    More,
    /// Consumed this many bytes and moved to this state.
    Next(usize, Chunk),
    /// Consumed this many bytes, the last of the body.
    Done(usize),
}

/// A chunk-size line at the start of `data`, for a body that holds `body_len` bytes so far.
fn size_line(data: &[u8], body_len: usize, limits: &Limits) -> Result<Step, HttpError> {
    let Some(nl) = memchr::memchr(b'\n', data) else {
        if data.len() > MAX_CHUNK_LINE {
            return Err(HttpError::new(400, "chunk size line too long"));
        }
        return Ok(Step::More);
    };
    if nl > MAX_CHUNK_LINE {
        return Err(HttpError::new(400, "chunk size line too long"));
    }
    let size = parse_chunk_size(&data[..nl], limits.max_body)?;
    if body_len + size > limits.max_body {
        return Err(HttpError::new(413, "request body too large"));
    }
    let next = if size == 0 {
        Chunk::Trailer(0)
    } else {
        Chunk::Data(size)
    };
    Ok(Step::Next(nl + 1, next))
}

/// A trailer line at the start of `data`, after `seen` bytes of trailer section. An empty line
/// ends the body; trailer fields are checked for a colon and otherwise ignored.
fn trailer_line(data: &[u8], seen: usize, limits: &Limits) -> Result<Step, HttpError> {
    let Some(nl) = memchr::memchr(b'\n', data) else {
        if seen + data.len() > limits.max_head {
            return Err(HttpError::new(431, "trailer section too large"));
        }
        return Ok(Step::More);
    };
    if seen + nl > limits.max_head {
        return Err(HttpError::new(431, "trailer section too large"));
    }
    let line = &data[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Ok(Step::Done(nl + 1));
    }
    if !line.contains(&b':') {
        return Err(HttpError::new(400, "malformed trailer field"));
    }
    Ok(Step::Next(nl + 1, Chunk::Trailer(seen + nl + 1)))
}

/// Parses a chunk-size line (without its `\n`): hex digits, then optional whitespace and
/// `;`-extensions, which are ignored.
fn parse_chunk_size(line: &[u8], max: usize) -> Result<usize, HttpError> {
    const INVALID: HttpError = HttpError::new(400, "invalid chunk size");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(INVALID);
    }
    let rest = trim(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') || rest.contains(&b'\r') {
        return Err(INVALID);
    }
    let mut size: usize = 0;
    for &d in &line[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0) as usize;
        size = match size.checked_mul(16).and_then(|s| s.checked_add(v)) {
            Some(s) if s <= max => s,
            _ => return Err(HttpError::new(413, "request body too large")),
        };
    }
    Ok(size)
}
