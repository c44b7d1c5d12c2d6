//! Cursors: where a client is in a room's history, as the API writes it.
//!
//! A message's cursor is `<epoch>-<seq>`: the server's epoch tag (its start time in base 36) and
//! the message's number in its room. Sequence numbers start at 1 and never repeat within an
//! epoch, so "everything after cursor C" is a range of the history, found by arithmetic, not by
//! a search. The cursor `0` means "from the start of what is retained".

use std::fmt;

use crate::response::{push_decimal, push_u64};

/// A cursor as the server writes it: in a `Parlor-Cursor` header, a publish answer or a JSON
/// batch. Parsing goes the other way, into a [`Since`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cursor<'a> {
    /// `0`: a poll that asked for everything and got nothing yet keeps it.
    Start,
    /// `<epoch>-<seq>`.
    At {
        /// The epoch tag of this run.
        epoch: &'a str,
        /// The message's sequence number in its room.
        seq: u64,
    },
}

impl<'a> Cursor<'a> {
    /// The cursor of message `seq` in this run.
    pub fn at(epoch: &'a str, seq: u64) -> Self {
        Cursor::At { epoch, seq }
    }

    /// Appends the cursor's text to `out` (for bodies built byte by byte).
    pub fn push_to(&self, out: &mut Vec<u8>) {
        match *self {
            Cursor::Start => out.push(b'0'),
            Cursor::At { epoch, seq } => {
                out.extend_from_slice(epoch.as_bytes());
                out.push(b'-');
                push_u64(out, seq);
            }
        }
    }

    /// Appends the cursor's text to `out` (what `Display` writes, without the formatting
    /// machinery: every publish answer writes its cursor twice).
    pub fn push_str_to(&self, out: &mut String) {
        match *self {
            Cursor::Start => out.push('0'),
            Cursor::At { epoch, seq } => {
                out.push_str(epoch);
                out.push('-');
                push_decimal(out, seq);
            }
        }
    }
}

impl fmt::Display for Cursor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Start => f.write_str("0"),
            Cursor::At { epoch, seq } => write!(f, "{epoch}-{seq}"),
        }
    }
}

/// What a `since` (or `Last-Event-ID`) value asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Since {
    /// `since=0`: everything retained, no gap signalled.
    All,
    /// A cursor of this epoch: messages after this sequence number.
    Seq(u64),
    /// A cursor of another epoch (from before a restart).
    OtherEpoch,
}

impl Since {
    /// Whether `value` is a cursor (or `0`) at all, whatever its epoch.
    pub fn is_valid(value: &str) -> bool {
        // No valid cursor has an empty epoch tag, so every valid one parses against it.
        Since::parse(value, "").is_some()
    }

    /// Parses a cursor sent by a client, for a room numbered in `epoch`. `None`: not a cursor.
    pub fn parse(value: &str, epoch: &str) -> Option<Since> {
        if value == "0" {
            return Some(Since::All);
        }
        let (tag, seq) = value.rsplit_once('-')?;
        let valid_tag = !tag.is_empty()
            && tag.len() <= 16
            && tag
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        let valid_seq =
            !seq.is_empty() && seq.len() <= 19 && seq.bytes().all(|b| b.is_ascii_digit());
        if !valid_tag || !valid_seq {
            return None;
        }
        if tag != epoch {
            return Some(Since::OtherEpoch);
        }
        seq.parse().ok().map(Since::Seq)
    }
}

/// The base-36 tag of an epoch (ms since the Unix epoch).
pub(crate) fn epoch_tag(mut ms: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(ms % 36) as usize]);
        ms /= 36;
        if ms == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_written_alike_every_way() {
        for cursor in [
            Cursor::Start,
            Cursor::at("mx6gzvy9", 1),
            Cursor::at("e", 1234567),
        ] {
            let shown = cursor.to_string();
            let mut text = String::from(">");
            cursor.push_str_to(&mut text);
            assert_eq!(text, format!(">{shown}"));
            let mut bytes = b">".to_vec();
            cursor.push_to(&mut bytes);
            assert_eq!(bytes, format!(">{shown}").into_bytes());
        }
        assert_eq!(Cursor::Start.to_string(), "0");
        assert_eq!(Cursor::at("e", 1234567).to_string(), "e-1234567");
    }

    #[test]
    fn cursors_parse() {
        assert_eq!(Since::parse("0", "abc"), Some(Since::All));
        assert_eq!(Since::parse("abc-7", "abc"), Some(Since::Seq(7)));
        assert_eq!(Since::parse("abd-7", "abc"), Some(Since::OtherEpoch));
        for bad in [
            "",
            "-",
            "abc-",
            "-7",
            "ABC-7",
            "abc-x",
            "abc-99999999999999999999",
            "7",
        ] {
            assert_eq!(Since::parse(bad, "abc"), None, "{bad:?}");
        }
        assert_eq!(epoch_tag(0), "0");
        assert_eq!(epoch_tag(36 * 36 + 35), "10z");
    }

    #[test]
    fn cursors_display_as_they_parse() {
        let c = Cursor::at("abc", 42);
        assert_eq!(c.to_string(), "abc-42");
        let mut out = Vec::new();
        c.push_to(&mut out);
        assert_eq!(out, b"abc-42");
        assert_eq!(Since::parse(&c.to_string(), "abc"), Some(Since::Seq(42)));
        assert_eq!(Cursor::Start.to_string(), "0");
        assert_eq!(
            Since::parse(&Cursor::Start.to_string(), "abc"),
            Some(Since::All)
        );
    }
}
