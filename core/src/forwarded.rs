//! Behind a reverse proxy: who the client is, and which origin it used.
//!
//! A request that comes straight from a client is described by its peer address and its `Host`
//! header (Parlor itself speaks plain HTTP). Behind nginx or Caddy every request comes from the
//! proxy's address, and the `Host` may have lost its port or be an internal name; the proxy says
//! what it saw in `Forwarded` (RFC 7239) or in the older `X-Forwarded-For`, `-Proto`, `-Host`
//! and `-Port`. Those headers are believed only from a peer in the `--trusted-proxy` list
//! ([`TrustedProxy`]); from anyone else they are ignored, so a client cannot choose its address
//! (to dodge the rate limit) or its origin.
//!
//! From a trusted peer, [`Forwarding::resolve`] reads `Forwarded` when it is present, and the
//! `X-Forwarded-*` fields otherwise (never a mix of both):
//!
//! * **The client address**: the hops are walked from the nearest (rightmost) to the farthest; a
//!   hop that is itself a trusted proxy is skipped, and the first one that is not is the client.
//!   When every hop is trusted, the farthest is the client. A hop that does not give an address
//!   (`unknown`, an obfuscated `_name`, an element without `for=`) ends the walk: the client is
//!   then the last address known, the trusted proxy that reported it.
//! * **The public origin** (scheme, host, port): `Forwarded`'s `proto=` and `host=` of the element
//!   where the walk stopped (the one the client-facing proxy added), or the last value of
//!   `X-Forwarded-Proto` and `X-Forwarded-Host`, with `X-Forwarded-Port` overriding the port.
//!   What the proxy does not state comes from the request itself (its `Host`; the scheme is
//!   then unknown, and the same-origin rule takes the `Origin`'s, as for a direct request).
//! * **Malformed** headers from a trusted proxy (a syntax error, an address that does not parse,
//!   a scheme other than http/https, a bad host or port) are not half-believed: the request is
//!   taken as direct (peer address, own `Host`) and [`Client::malformed`] is set, which
//!   `/metrics` counts as `parlor_forwarded_malformed_total`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::http::Request;

/// One `--trusted-proxy` value: an address (`127.0.0.1`, `::1`) or a network in CIDR form
/// (`10.0.0.0/8`, `fd00::/8`). IPv4-mapped IPv6 peers (`::ffff:10.0.0.1`) match IPv4 entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy {
    /// The network address, with the bits past the prefix cleared.
    net: IpAddr,
    /// The prefix length: 32 (IPv4) or 128 (IPv6) for a single address.
    prefix: u8,
}

impl TrustedProxy {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == net.into()
            }
            _ => false,
        }
    }
}

/// `bits` (an address `width` bits wide) with everything past the first `prefix` bits cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    let host_bits = u32::from(width - prefix.min(width));
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits << host_bits
    }
}

impl FromStr for TrustedProxy {
    type Err = &'static str;

    /// Parses `ADDR` or `ADDR/PREFIX`. The error says what is wrong, for a message that names
    /// the flag.
    fn from_str(s: &str) -> Result<TrustedProxy, &'static str> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "is not an IP address or CIDR network (try 127.0.0.1 or 10.0.0.0/8)")?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| "has a bad prefix length")?
            }
            Some(_) => return Err("has a bad prefix length (try 10.0.0.0/8)"),
        };
        if prefix > width {
            return Err("has a prefix longer than the address");
        }
        let net = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                mask(u128::from(u32::from(a)), prefix, 32) as u32
            )),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(u128::from(a), prefix, 128))),
        };
        if net != addr {
            return Err("has host bits set past its prefix (try the network address)");
        }
        Ok(TrustedProxy { net, prefix })
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == width {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
        }
    }
}

/// A URI scheme Parlor can be reached by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An origin as the same-origin rule compares them: scheme, host (lowercase; an IPv6 address in
/// brackets) and port. A browser's `Origin` has all three (the port defaults to the scheme's).
/// What a request says about itself may lack the scheme (a direct request: Parlor speaks plain
/// HTTP, but a TLS proxy that is not trusted may stand in front) and the port (a `Host` without
/// one); [`Site::admits`] then takes the `Origin`'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Site {
    pub scheme: Option<Scheme>,
    pub host: String,
    pub port: Option<u16>,
}

impl Site {
    /// The site of a browser's `Origin` header (`http://127.0.0.1:19910`), scheme and port
    /// always set; `None` for `null` or anything that is not `scheme://host[:port]`.
    pub fn from_origin(origin: &str) -> Option<Site> {
        let (scheme, authority) = origin.split_once("://")?;
        let scheme = Scheme::parse(scheme)?;
        let (host, port) = split_authority(authority)?;
        Some(Site {
            scheme: Some(scheme),
            host,
            port: Some(port.unwrap_or(scheme.default_port())),
        })
    }

    /// The site a request names with a `Host` value (`host[:port]`), the scheme if known, and
    /// a port that replaces the `Host`'s.
    pub fn from_host(scheme: Option<Scheme>, host: &str, port: Option<u16>) -> Option<Site> {
        let (host, own_port) = split_authority(host)?;
        Some(Site {
            scheme,
            host,
            port: port.or(own_port),
        })
    }

    /// Whether a browser's `Origin` is this site: same scheme (when known), same host, same
    /// port (a missing one being the default of the known scheme, else of the `Origin`'s).
    pub fn admits(&self, origin: &str) -> bool {
        let Some(o) = Site::from_origin(origin) else {
            return false;
        };
        let (Some(o_scheme), Some(o_port)) = (o.scheme, o.port) else {
            return false;
        };
        let scheme = self.scheme.unwrap_or(o_scheme);
        scheme == o_scheme
            && self.host == o.host
            && self.port.unwrap_or(scheme.default_port()) == o_port
    }
}

impl Site {
    /// `host[:port]`, as a `Host` header would say it (for the loopback `Host` check).
    pub fn authority(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for Site {
    /// `scheme://host:port`; `//host` when the scheme or the port is not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = self.scheme {
            write!(f, "{}:", scheme.as_str())?;
        }
        write!(f, "//{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Splits `host[:port]` (RFC 9110 `Host` syntax: a reg-name, an IPv4 address or a bracketed
/// IPv6 address), lowercasing the host. `None` when it is not one.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&authority[..v6.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let reg_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if host.is_empty() || !(host.starts_with('[') || host.bytes().all(reg_name)) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// A decimal port, 1 to 65535.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}

/// The forwarding header fields of a request, as [`Forwarding::resolve`] reads them. Repeated
/// fields are joined with `, ` (they are lists).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardedHeaders {
    /// `Forwarded` (RFC 7239)
    pub forwarded: Option<String>,
    /// `X-Forwarded-For`
    pub x_for: Option<String>,
    /// `X-Forwarded-Proto`
    pub x_proto: Option<String>,
    /// `X-Forwarded-Host`
    pub x_host: Option<String>,
    /// `X-Forwarded-Port`
    pub x_port: Option<String>,
}

impl ForwardedHeaders {
    fn any(&self) -> bool {
        self.forwarded.is_some()
            || self.x_for.is_some()
            || self.x_proto.is_some()
            || self.x_host.is_some()
            || self.x_port.is_some()
    }
}

/// Who sent a request, as far as Parlor can trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Client {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub addr: IpAddr,
    /// The origin a trusted proxy forwarded (its stated parts, the rest from the request's
    /// `Host`). `None` for a direct request, whose origin is its `Host` ([`Client::site`] makes
    /// it when a check needs it, so a request that needs none allocates nothing).
    pub site: Option<Site>,
    /// The peer is a trusted proxy and stated the client's address or origin.
    pub forwarded: bool,
    /// The peer is a trusted proxy whose forwarding headers did not parse: `addr` and `site` are
    /// the direct ones.
    pub malformed: bool,
}

impl Client {
    /// The origin the client used: the forwarded one, or the request's own `Host` (scheme
    /// unknown). `None` without a usable one.
    pub fn site(&self, host_header: Option<&str>) -> Option<Site> {
        if self.forwarded {
            return self.site.clone();
        }
        host_header.and_then(|h| Site::from_host(None, h, None))
    }
}

/// The `--trusted-proxy` list, and how a request's client is worked out from it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Forwarding {
    proxies: Vec<TrustedProxy>,
}

impl Forwarding {
    /// The trusted proxies from the configuration.
    pub fn new(proxies: Vec<TrustedProxy>) -> Forwarding {
        Forwarding { proxies }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|p| p.contains(ip))
    }

    /// The client of `request`, which came from `peer`.
    pub fn client(&self, peer: IpAddr, request: &Request) -> Client {
        let none = ForwardedHeaders::default();
        let forwarding = request.headers.forwarding.as_deref().unwrap_or(&none);
        self.resolve(peer, request.headers.host.as_deref(), forwarding)
    }

    /// The client of a request from `peer` with this `Host` and these forwarding headers.
    pub fn resolve(
        &self,
        peer: IpAddr,
        host_header: Option<&str>,
        headers: &ForwardedHeaders,
    ) -> Client {
        let peer = peer.to_canonical();
        let direct = Client {
            addr: peer,
            site: None,
            forwarded: false,
            malformed: false,
        };
        if !headers.any() || !self.trusts(peer) {
            return direct;
        }
        let stated = match &headers.forwarded {
            Some(value) => self.read_forwarded(peer, value),
            None => self.read_x_forwarded(peer, headers),
        };
        let Some(Stated {
            addr,
            scheme,
            host,
            port,
        }) = stated
        else {
            return Client {
                malformed: true,
                ..direct
            };
        };
        Client {
            addr,
            site: host
                .as_deref()
                .or(host_header)
                .and_then(|h| Site::from_host(scheme, h, port)),
            forwarded: true,
            malformed: false,
        }
    }

    /// What a `Forwarded` field states, walking its elements from the nearest.
    fn read_forwarded(&self, peer: IpAddr, value: &str) -> Option<Stated> {
        let elements = parse_forwarded(value)?;
        let mut addr = peer;
        let mut stop = elements.last()?;
        for element in elements.iter().rev() {
            stop = element;
            match element.node {
                Some(Node::Ip(ip)) => {
                    addr = ip.to_canonical();
                    if !self.trusts(addr) {
                        break;
                    }
                }
                Some(Node::Hidden) | None => break,
            }
        }
        let scheme = match &stop.proto {
            Some(p) => Some(Scheme::parse(p)?),
            None => None,
        };
        if let Some(h) = &stop.host {
            split_authority(h)?;
        }
        Some(Stated {
            addr,
            scheme,
            host: stop.host.clone(),
            port: None,
        })
    }

    /// What the `X-Forwarded-*` fields state.
    fn read_x_forwarded(&self, peer: IpAddr, h: &ForwardedHeaders) -> Option<Stated> {
        let mut addr = peer;
        if let Some(list) = &h.x_for {
            // Empty list elements (`a,,b`, a blank field) are skipped, as RFC 9110 §5.6.1 lets a
            // recipient do.
            for entry in list.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
                match parse_x_for(entry)? {
                    Some(ip) => {
                        addr = ip.to_canonical();
                        if !self.trusts(addr) {
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        let scheme = match last(&h.x_proto) {
            Some(p) => Some(Scheme::parse(p)?),
            None => None,
        };
        let host = last(&h.x_host).map(str::to_owned);
        if let Some(host) = &host {
            split_authority(host)?;
        }
        let port = match last(&h.x_port) {
            Some(p) => Some(parse_port(p)?),
            None => None,
        };
        Some(Stated {
            addr,
            scheme,
            host,
            port,
        })
    }
}

/// What a trusted proxy stated: the client's address, and the parts of the origin it gave.
struct Stated {
    addr: IpAddr,
    scheme: Option<Scheme>,
    host: Option<String>,
    port: Option<u16>,
}

/// The last entry of a list-valued field, `None` when absent or empty.
fn last(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// One `X-Forwarded-For` entry: an address (IPv6 bare or in brackets, either with a port
/// after it in the bracketed or IPv4 form), or `unknown` (`Ok(None)`). `None` when malformed.
fn parse_x_for(entry: &str) -> Option<Option<IpAddr>> {
    if entry.eq_ignore_ascii_case("unknown") {
        return Some(None);
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(Some(ip));
    }
    parse_node(entry).map(|n| match n {
        Node::Ip(ip) => Some(ip),
        Node::Hidden => None,
    })
}

/// A `for=` node of RFC 7239 §6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    /// An address (the port, if any, dropped).
    Ip(IpAddr),
    /// `unknown` or an obfuscated identifier (`_hidden`).
    Hidden,
}

/// `nodename [ ":" node-port ]`: an IPv4 address, a bracketed IPv6 address, `unknown` or an
/// obfuscated `_name`, each optionally with a port (a number or an obfuscated `_port`).
fn parse_node(s: &str) -> Option<Node> {
    let obfuscated = |s: &str| {
        s.len() > 1
            && s.starts_with('_')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&s[..v6.len() + 2], port)
    } else {
        match s.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        }
    };
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
struct Element {
    node: Option<Node>,
    host: Option<String>,
    proto: Option<String>,
}

/// Parses a `Forwarded` value (RFC 7239 §4): a comma-separated list of elements, each a
/// semicolon-separated list of `token=value` pairs, the value a token or a quoted string. A
/// parameter may occur once per element; empty elements are skipped. `None` when malformed or
/// when there is no element at all.
fn parse_forwarded(value: &str) -> Option<Vec<Element>> {
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
fn quoted(value: &str, at: usize) -> Option<(String, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusting(list: &[&str]) -> Forwarding {
        Forwarding::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn fwd(value: &str) -> ForwardedHeaders {
        ForwardedHeaders {
            forwarded: Some(value.to_owned()),
            ..ForwardedHeaders::default()
        }
    }

    fn xff(value: &str) -> ForwardedHeaders {
        ForwardedHeaders {
            x_for: Some(value.to_owned()),
            ..ForwardedHeaders::default()
        }
    }

    fn site(s: &str) -> Option<Site> {
        Site::from_origin(s)
    }

    /// Whether the client's site is the same origin as `origin` (for a direct request, its
    /// `Host` is `host`).
    fn admits_with(c: &Client, host: Option<&str>, origin: &str) -> bool {
        c.site(host).is_some_and(|s| s.admits(origin))
    }

    /// Whether the forwarded site is the same origin as `origin`.
    fn admits(c: &Client, origin: &str) -> bool {
        assert!(c.forwarded, "not forwarded: {c:?}");
        admits_with(c, None, origin)
    }

    #[test]
    fn trusted_proxy_values() {
        let p = |s: &str| s.parse::<TrustedProxy>();
        let lo = p("127.0.0.1").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(
            lo.contains(ip("::ffff:127.0.0.1")),
            "IPv4-mapped peers match"
        );
        assert!(!lo.contains(ip("127.0.0.2")));
        let ten = p("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.200.3.4")) && !ten.contains(ip("11.0.0.1")));
        assert!(
            !ten.contains(ip("::a00:1")),
            "IPv6 is not in an IPv4 network"
        );
        let ula = p("fd00::/8").unwrap();
        assert!(ula.contains(ip("fd12:3456::1")) && !ula.contains(ip("fe80::1")));
        assert!(p("::1").unwrap().contains(ip("::1")));
        assert!(p("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(p("::/0").unwrap().contains(ip("2001:db8::1")));
        assert_eq!(ten.to_string(), "10.0.0.0/8");
        assert_eq!(lo.to_string(), "127.0.0.1");
        for bad in [
            "",
            "localhost",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3.4:80",
            "[::1]",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spoofed_headers_from_an_untrusted_peer_are_ignored() {
        let f = trusting(&["10.0.0.0/8"]);
        let headers = ForwardedHeaders {
            forwarded: Some("for=1.2.3.4;proto=https;host=evil.example".into()),
            x_for: Some("5.6.7.8".into()),
            x_proto: Some("https".into()),
            x_host: Some("evil.example".into()),
            x_port: Some("443".into()),
        };
        let host = Some("chat.example:8080");
        let c = f.resolve(ip("192.0.2.9"), host, &headers);
        assert_eq!((c.addr, &c.site), (ip("192.0.2.9"), &None));
        assert!(admits_with(&c, host, "http://chat.example:8080"));
        assert!(!admits_with(&c, host, "https://evil.example"));
        assert!(!c.forwarded && !c.malformed);
        // With no proxy trusted at all, not even loopback is believed.
        let c = Forwarding::default().resolve(ip("127.0.0.1"), Some("a"), &headers);
        assert_eq!((c.addr, c.forwarded), (ip("127.0.0.1"), false));
    }

    #[test]
    fn the_nginx_case_port_dropped_from_host() {
        // Browser at http://127.0.0.1:19910; nginx sends Host $host (no port).
        let f = trusting(&["127.0.0.1"]);
        let x = ForwardedHeaders {
            x_for: Some("127.0.0.2".into()),
            x_proto: Some("http".into()),
            x_host: Some("127.0.0.1".into()),
            x_port: Some("19910".into()),
            ..ForwardedHeaders::default()
        };
        let c = f.resolve(ip("127.0.0.1"), Some("127.0.0.1"), &x);
        assert_eq!(c.addr, ip("127.0.0.2"));
        assert!(admits(&c, "http://127.0.0.1:19910"), "{:?}", c.site);
        assert!(!admits(&c, "http://127.0.0.1") && !admits(&c, "https://127.0.0.1:19910"));
        assert!(c.forwarded && !c.malformed);
        let rfc = fwd("for=127.0.0.2;proto=http;host=\"127.0.0.1:19910\"");
        let c = f.resolve(ip("127.0.0.1"), Some("127.0.0.1"), &rfc);
        assert_eq!(c.addr, ip("127.0.0.2"));
        assert!(admits(&c, "http://127.0.0.1:19910"), "{:?}", c.site);
        // TLS at the proxy: https and its default port.
        let tls = fwd("for=192.0.2.60;proto=https;host=chat.example");
        let c = f.resolve(ip("127.0.0.1"), Some("127.0.0.1:8080"), &tls);
        assert!(admits(&c, "https://chat.example"), "{:?}", c.site);
        assert!(!admits(&c, "http://chat.example") && !admits(&c, "https://chat.example:8080"));
        assert_eq!(c.site.unwrap().to_string(), "https://chat.example");
        // Only the scheme forwarded: the host is the request's own.
        let proto = ForwardedHeaders {
            x_proto: Some("HTTPS".into()),
            ..ForwardedHeaders::default()
        };
        let c = f.resolve(ip("127.0.0.1"), Some("Chat.Example"), &proto);
        assert_eq!(c.addr, ip("127.0.0.1"));
        assert!(admits(&c, "https://chat.example") && !admits(&c, "http://chat.example"));
        // Nothing forwarded: the scheme is unknown, and the Origin's decides the default port
        // (a TLS proxy that is not trusted, sending `Host $host`, keeps working).
        let host = Some("chat.example");
        let c = Forwarding::default().resolve(ip("127.0.0.1"), host, &proto);
        assert_eq!(c.site(host).unwrap().to_string(), "//chat.example");
        assert!(admits_with(&c, host, "https://chat.example"));
        assert!(admits_with(&c, host, "http://chat.example"));
        assert!(!admits_with(&c, host, "https://chat.example:8443"));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded() {
        let f = trusting(&["127.0.0.1"]);
        let both = ForwardedHeaders {
            forwarded: Some("for=192.0.2.1".into()),
            x_for: Some("192.0.2.2".into()),
            x_host: Some("other.example".into()),
            ..ForwardedHeaders::default()
        };
        let c = f.resolve(ip("127.0.0.1"), Some("chat.example"), &both);
        assert_eq!(c.addr, ip("192.0.2.1"));
        assert!(admits(&c, "http://chat.example"), "{:?}", c.site);
    }

    #[test]
    fn chains_of_proxies() {
        let f = trusting(&["127.0.0.1", "10.0.0.0/8"]);
        // client 203.0.113.5 → cdn 10.1.1.1 → nginx 10.2.2.2 → (peer) 127.0.0.1
        let c = f.resolve(
            ip("127.0.0.1"),
            None,
            &xff("203.0.113.5, 10.1.1.1, 10.2.2.2"),
        );
        assert_eq!(c.addr, ip("203.0.113.5"));
        // A client that writes its own X-Forwarded-For only adds entries further left.
        let c = f.resolve(
            ip("127.0.0.1"),
            None,
            &xff("6.6.6.6, 198.51.100.7, 10.2.2.2"),
        );
        assert_eq!(c.addr, ip("198.51.100.7"));
        // Every hop trusted: the farthest one.
        let c = f.resolve(ip("127.0.0.1"), None, &xff("10.9.9.9,10.2.2.2"));
        assert_eq!(c.addr, ip("10.9.9.9"));
        // `unknown` ends the walk at the proxy that reported it.
        let c = f.resolve(
            ip("127.0.0.1"),
            None,
            &xff("198.51.100.7, unknown, 10.2.2.2"),
        );
        assert_eq!(c.addr, ip("10.2.2.2"));
        // The same with Forwarded, whose element at the stop gives the public origin.
        let chain = fwd("for=198.51.100.7;host=chat.example;proto=https, \
             for=10.1.1.1;host=\"internal:8080\";proto=http");
        let c = f.resolve(ip("127.0.0.1"), Some("127.0.0.1:8080"), &chain);
        assert_eq!(c.addr, ip("198.51.100.7"));
        assert!(admits(&c, "https://chat.example"), "{:?}", c.site);
        let hidden = fwd("for=198.51.100.7, for=_gateway, for=10.3.3.3");
        let c = f.resolve(ip("127.0.0.1"), None, &hidden);
        assert_eq!(c.addr, ip("10.3.3.3"));
        let no_for = fwd("for=198.51.100.7, proto=https");
        let c = f.resolve(ip("127.0.0.1"), Some("chat.example"), &no_for);
        assert_eq!(c.addr, ip("127.0.0.1"));
        assert!(admits(&c, "https://chat.example"), "{:?}", c.site);
        // Empty elements are skipped.
        let c = f.resolve(ip("127.0.0.1"), None, &xff(" , 192.0.2.5,,10.2.2.2, "));
        assert_eq!((c.addr, c.malformed), (ip("192.0.2.5"), false));
        // Several fields are one list.
        let c = f.resolve(ip("127.0.0.1"), None, &fwd("for=192.0.2.4, for=10.1.1.1"));
        assert_eq!(c.addr, ip("192.0.2.4"));
    }

    #[test]
    fn ipv6() {
        let f = trusting(&["::1", "fd00::/8"]);
        let c = f.resolve(ip("::1"), None, &fwd("for=\"[2001:db8:cafe::17]:4711\""));
        assert_eq!(c.addr, ip("2001:db8:cafe::17"));
        let c = f.resolve(
            ip("::1"),
            None,
            &fwd("For=\"[2001:db8::1]\", for=\"[fd00::2]:80\""),
        );
        assert_eq!(c.addr, ip("2001:db8::1"));
        let c = f.resolve(ip("fd00::9"), None, &xff("2001:db8::5, fd00::3"));
        assert_eq!(c.addr, ip("2001:db8::5"));
        let c = f.resolve(ip("::1"), None, &xff("[2001:db8::6]:1234"));
        assert_eq!(c.addr, ip("2001:db8::6"));
        // An IPv4 client behind an IPv6 proxy, and IPv4-mapped forms.
        let c = f.resolve(ip("::1"), None, &xff("::ffff:192.0.2.8"));
        assert_eq!(c.addr, ip("192.0.2.8"));
        let host = fwd("for=\"[2001:db8::1]\";host=\"[2001:DB8::AA]:8443\";proto=https");
        let c = f.resolve(ip("::1"), None, &host);
        assert!(admits(&c, "https://[2001:db8::aa]:8443"), "{:?}", c.site);
        // A trusted IPv4 proxy also matches when the socket reports it IPv4-mapped.
        let c = trusting(&["127.0.0.1"]).resolve(ip("::ffff:127.0.0.1"), None, &xff("192.0.2.3"));
        assert_eq!(c.addr, ip("192.0.2.3"));
    }

    #[test]
    fn malformed_headers_fall_back_to_the_peer() {
        let f = trusting(&["127.0.0.1"]);
        let direct = Site::from_host(None, "127.0.0.1:8080", None);
        let bad = [
            fwd("for=[2001:db8::1]"), // IPv6 must be quoted
            fwd("for=not-an-address"),
            fwd("for=1.2.3.4;for=5.6.7.8"),
            fwd("for=1.2.3.4 x"),
            fwd("for=\"1.2.3.4"),
            fwd("for="),
            fwd("=1.2.3.4"),
            fwd("for=1.2.3.4:99999"),
            fwd(","),
            fwd("for=1.2.3.4;proto=gopher"),
            fwd("for=1.2.3.4;host=a:80"), // a colon needs quotes
            fwd("for=1.2.3.4;host=\"a b\""),
            fwd("for=\"[::1\""),
            xff("1.2.3.4, garbage"),
            xff("1.2.3.4.5"),
            ForwardedHeaders {
                x_port: Some("http".into()),
                ..ForwardedHeaders::default()
            },
            ForwardedHeaders {
                x_proto: Some("ftp".into()),
                ..ForwardedHeaders::default()
            },
            ForwardedHeaders {
                x_host: Some("chat.example/evil".into()),
                ..ForwardedHeaders::default()
            },
        ];
        for headers in bad {
            let c = f.resolve(ip("127.0.0.1"), Some("127.0.0.1:8080"), &headers);
            assert!(c.malformed, "{headers:?} not malformed");
            let site = c.site(Some("127.0.0.1:8080"));
            assert_eq!((c.addr, &site), (ip("127.0.0.1"), &direct), "{headers:?}");
            assert!(!c.forwarded);
        }
        // The same headers from an untrusted peer are not even looked at.
        let c = f.resolve(ip("192.0.2.1"), Some("x"), &fwd("for="));
        assert!(!c.malformed);
    }

    #[test]
    fn the_request_reader_keeps_the_forwarding_fields() {
        use crate::http::{Limits, ReadEvent, RequestReader};
        let mut reader = RequestReader::new();
        reader.push(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nforwarded: for=192.0.2.1\r\n\
              X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 192.0.2.2\r\n\
              X-Forwarded-Proto: https\r\nX-FORWARDED-HOST: chat.example\r\n\
              X-Forwarded-Port: 8443\r\nX-Forwarded-Server: ignored\r\n\r\n",
        );
        let Some(Ok(ReadEvent::Request(request))) = reader.next_event(&Limits::default()) else {
            panic!("no request");
        };
        let f = request.headers.forwarding.as_deref().unwrap();
        assert_eq!(f.forwarded.as_deref(), Some("for=192.0.2.1"));
        assert_eq!(f.x_for.as_deref(), Some("10.0.0.1, 192.0.2.2"));
        assert_eq!(f.x_proto.as_deref(), Some("https"));
        assert_eq!(f.x_host.as_deref(), Some("chat.example"));
        assert_eq!(f.x_port.as_deref(), Some("8443"));
        let c = trusting(&["127.0.0.1"]).client(ip("127.0.0.1"), &request);
        assert_eq!(c.addr, ip("192.0.2.1"));
    }

    #[test]
    fn forwarded_syntax() {
        let e = parse_forwarded(
            "for=192.0.2.43 ; Proto=https;by=\"[2001:db8::1]:80\";ext=\"a,\\\"b;\" ,, for=_x",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].node, Some(Node::Ip(ip("192.0.2.43"))));
        assert_eq!(e[0].proto.as_deref(), Some("https"));
        assert_eq!(e[1].node, Some(Node::Hidden));
        assert_eq!(parse_node("unknown:_port"), Some(Node::Hidden));
        assert_eq!(parse_node("192.0.2.1:_p"), Some(Node::Ip(ip("192.0.2.1"))));
        assert_eq!(parse_node("_"), None);
        assert_eq!(parse_node("[::1]x"), None);
        assert_eq!(parse_node("1.2.3.4:0"), None);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(site("http://a.example"), site("http://A.example:80"));
        assert_ne!(site("http://a.example"), site("https://a.example"));
        assert_ne!(site("http://a.example:8080"), site("http://a.example"));
        let host = |h: &str| Site::from_host(None, h, None).unwrap();
        assert!(host("a.example").admits("http://a.example:80"));
        assert!(host("a.example:443").admits("https://a.example"));
        assert!(!host("a.example:443").admits("http://a.example"));
        assert!(host("[::1]:8080").admits("http://[::1]:8080"));
        assert!(!host("a.example").admits("null"));
        for bad in [
            "null",
            "a.example",
            "ftp://a",
            "http://",
            "http://a:x",
            "http://a/",
        ] {
            assert_eq!(site(bad), None, "{bad}");
        }
    }
}
