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
//!
//! The syntax of `Forwarded` and of its nodes is in `header.rs`; the origin a request names
//! ([`Site`], its scheme, host and port) in `origin.rs`, shared with `cors.rs`.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use crate::http::Request;
use crate::origin::{parse_port, split_authority, Scheme, Site};

mod header;

use header::{parse_forwarded, parse_node, Node};

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

#[cfg(test)]
mod tests;
