//! The `Forwarded` field (RFC 7239): its elements of `token=value` pairs, quoted strings, and
//! the node syntax of `for=` (also what an `X-Forwarded-For` entry with a port or brackets is
//! read as). Only syntax here; what a trusted proxy's elements mean is `mod.rs`.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::origin::{parse_port, split_host_port};

/// A `for=` node of RFC 7239 §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Node {
    /// An address (the port, if any, dropped).
    Ip(IpAddr),
    /// `unknown` or an obfuscated identifier (`_hidden`).
    Hidden,
}

/// `nodename [ ":" node-port ]`: an IPv4 address, a bracketed IPv6 address, `unknown` or an
/// obfuscated `_name`, each optionally with a port (a number or an obfuscated `_port`).
pub(super) fn parse_node(s: &str) -> Option<Node> {
    let obfuscated = |s: &str| {
        s.len() > 1
            && s.starts_with('_')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let (name, port) = split_host_port(s)?;
    if let Some(p) = port {
        if parse_port(p).is_none() && !obfuscated(p) {
            return None;
        }
    }
    if name.eq_ignore_ascii_case("unknown") || obfuscated(name) {
        return Some(Node::Hidden);
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|a| Node::Ip(IpAddr::V6(a)));
    }
    name.parse::<Ipv4Addr>()
        .ok()
        .map(|a| Node::Ip(IpAddr::V4(a)))
}

/// One element of a `Forwarded` field: the parameters Parlor uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Element {
    pub node: Option<Node>,
    pub host: Option<String>,
    pub proto: Option<String>,
}

/// Parses a `Forwarded` value (RFC 7239 §4): a comma-separated list of elements, each a
/// semicolon-separated list of `token=value` pairs, the value a token or a quoted string. A
/// parameter may occur once per element; empty elements are skipped. `None` when malformed or
/// when there is no element at all.
pub(super) fn parse_forwarded(value: &str) -> Option<Vec<Element>> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut elements = Vec::new();
    let mut element = Element::default();
    let mut seen = [false; 3];
    let mut pairs = 0;
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i < b.len() && b[i] != b',' && b[i] != b';' {
            let start = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            let name = &value[start..i];
            if name.is_empty() || b.get(i) != Some(&b'=') {
                return None;
            }
            i += 1;
            let v = if b.get(i) == Some(&b'"') {
                let (v, next) = quoted(value, i)?;
                i = next;
                v
            } else {
                let start = i;
                while i < b.len() && is_tchar(b[i]) {
                    i += 1;
                }
                if start == i {
                    return None;
                }
                value[start..i].to_owned()
            };
            let slot = ["for", "host", "proto"]
                .iter()
                .position(|p| name.eq_ignore_ascii_case(p));
            if let Some(k) = slot {
                if std::mem::replace(&mut seen[k], true) {
                    return None;
                }
                match k {
                    0 => element.node = Some(parse_node(&v)?),
                    1 => element.host = Some(v),
                    _ => element.proto = Some(v),
                }
            } else if name.eq_ignore_ascii_case("by") {
                parse_node(&v)?;
            }
            pairs += 1;
            while i < b.len() && matches!(b[i], b' ' | b'\t') {
                i += 1;
            }
        }
        match b.get(i) {
            Some(b';') => i += 1,
            Some(b',') | None => {
                if pairs > 0 {
                    elements.push(std::mem::take(&mut element));
                }
                seen = [false; 3];
                pairs = 0;
                if i >= b.len() {
                    break;
                }
                i += 1;
            }
            Some(_) => return None,
        }
    }
    (!elements.is_empty()).then_some(elements)
}

/// The quoted string starting at `value[at]` (a `"`), unescaped, and the index after it.
pub(super) fn quoted(value: &str, at: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = value[at + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return Some((out, at + 1 + j + 1)),
            '\\' => out.push(chars.next()?.1),
            c if c == '\t' || (c >= ' ' && c != '\u{7f}') => out.push(c),
            _ => return None,
        }
    }
    None
}

/// An RFC 9110 token character.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
