//! Origins as the same-origin rule compares them: a [`Scheme`], a host and a port ([`Site`]),
//! and the one splitter of `host[:port]` values that every origin-shaped input goes through
//! (`Host`, `Origin`, `--allow-host` in `cors.rs`; the forwarded host and nodes in
//! `forwarded/`). Each caller then judges the parts by its own rule: a [`Site`] wants RFC 9110
//! `Host` syntax, the loopback check only a non-empty host and a numeric port.

use core::fmt;
use core::net::Ipv6Addr;

/// A URI scheme Parlor can be reached by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Scheme> {
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

/// Splits `host[:port]`, the host a name or a bracketed IPv6 literal (kept with its brackets),
/// without judging either part: what every authority-shaped value (`Host`, an `Origin`'s
/// authority, `--allow-host`, a `Forwarded` node) is first cut into. `None` when something other
/// than `:port` follows the closing bracket, or the bracket is not closed.
pub(crate) fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        let port = match rest {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        Some((host, port))
    } else {
        Some(match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        })
    }
}

/// Splits `host[:port]` (RFC 9110 `Host` syntax: a reg-name, an IPv4 address or a bracketed
/// IPv6 address), lowercasing the host. `None` when it is not one.
pub(crate) fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = split_host_port(authority)?;
    if let Some(v6) = host.strip_prefix('[') {
        v6[..v6.len() - 1].parse::<Ipv6Addr>().ok()?;
    }
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
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}
