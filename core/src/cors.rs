//! Cross-origin requests: the allow-list of origins and the headers it grants.
//!
//! An allow-listed origin is remembered by its index in the list (a `u16`), so a held poll
//! carries two bytes rather than a string, and answers to the same origin share one encoding.

use crate::origin::{split_host_port, Site};

/// The origins allowed to read from (and publish to) this server from another site.
#[derive(Debug)]
pub(crate) struct Cors {
    origins: Vec<String>,
}

/// The answer headers a cross-origin page may read beyond the safelisted ones.
pub(crate) const EXPOSED: &str = "Parlor-Cursor, Parlor-Gap, Parlor-Reset, Retry-After";

/// Headers that let an allow-listed origin read an answer: a poll's or a publish's, and every
/// error answer too (its status, its reason, its `Retry-After`).
pub(crate) fn answer_headers(origin: &str) -> [(&str, &str); 3] {
    [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", EXPOSED),
        ("Vary", "Origin"),
    ]
}

/// Headers of a preflight answer for an allow-listed origin and the route's methods.
pub(crate) fn preflight_headers<'a>(origin: &'a str, allowed: &'a str) -> [(&'a str, &'a str); 5] {
    [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Methods", allowed),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Last-Event-ID",
        ),
        ("Access-Control-Max-Age", "600"),
        ("Vary", "Origin"),
    ]
}

impl Cors {
    /// The allow-list from the configuration.
    pub fn new(origins: Vec<String>) -> Cors {
        Cors { origins }
    }

    /// The index of `origin` in the allow-list, if it is there.
    pub fn index(&self, origin: Option<&str>) -> Option<u16> {
        let origin = origin?;
        let i = self.origins.iter().position(|o| o == origin)?;
        u16::try_from(i).ok()
    }

    /// The allow-listed origin at `index`, if any.
    pub fn origin(&self, index: Option<u16>) -> Option<&str> {
        index
            .and_then(|i| self.origins.get(usize::from(i)))
            .map(String::as_str)
    }

    /// Whether an `Origin` may publish: the same origin (scheme, host and port; see
    /// [`Site::admits`]) as the request itself (`site`: its `Host`, or the public origin a trusted
    /// proxy forwarded), or in the allow-list.
    pub fn may_publish(&self, origin: &str, site: Option<&Site>) -> bool {
        if self.origins.iter().any(|o| o == origin) {
            return true;
        }
        site.is_some_and(|site| site.admits(origin))
    }
}

/// Splits `host[:port]` (the host may be a bracketed IPv6 address) into the host and the port,
/// more leniently than a [`Site`] does (any host characters, an empty port). `None` when the
/// port is not a number or the host is empty.
pub(crate) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some("") => None,
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((host, port))
}

/// Whether a request's `Host` (or absolute-form authority) may be served by a server listening
/// on loopback: a loopback name or address (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`),
/// or a host in `allowed` (`name`: any port; `name:port`: that port). A request without one
/// (HTTP/1.0) is served: browsers always send it. This is what stops DNS rebinding: a page on
/// `rebind.example` whose name now points at 127.0.0.1 still sends `Host: rebind.example`.
pub(crate) fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Some((name, port)) = split_authority(host) else {
        return false;
    };
    // Compared without case and without a lowercased copy: this runs on every request.
    let loopback = name.eq_ignore_ascii_case("localhost")
        || ends_with_ignore_case(name, ".localhost")
        || name == "[::1]"
        || name
            .parse::<core::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    loopback
        || allowed.iter().any(|a| match split_authority(a) {
            Some((n, None)) => n.eq_ignore_ascii_case(name),
            Some((n, Some(p))) => n.eq_ignore_ascii_case(name) && port == Some(p),
            None => false,
        })
}

/// Whether `s` ends with `suffix`, ASCII case ignored.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len()
        .checked_sub(suffix.len())
        .is_some_and(|start| s.as_bytes()[start..].eq_ignore_ascii_case(suffix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let cors = Cors::new(vec!["https://a.example".into(), "http://b.example".into()]);
        assert_eq!(cors.index(Some("http://b.example")), Some(1));
        assert_eq!(cors.index(Some("http://c.example")), None);
        assert_eq!(cors.index(None), None);
        assert_eq!(cors.origin(Some(0)), Some("https://a.example"));
        assert_eq!(cors.origin(Some(2)), None);
        let site = Site::from_origin("http://chat.example").unwrap();
        let direct = Site::from_origin("http://127.0.0.1:8080").map(|s| Site { scheme: None, ..s });
        assert!(cors.may_publish("http://127.0.0.1:8080", direct.as_ref()));
        assert!(cors.may_publish("https://127.0.0.1:8080", direct.as_ref()));
        assert!(!cors.may_publish("http://127.0.0.1:8081", direct.as_ref()));
        assert!(cors.may_publish("https://a.example", None));
        assert!(cors.may_publish("http://Chat.Example", Some(&site)));
        assert!(cors.may_publish("http://chat.example:80", Some(&site)));
        assert!(!cors.may_publish("https://chat.example", Some(&site)));
        assert!(!cors.may_publish("http://chat.example:8080", Some(&site)));
        assert!(!cors.may_publish("http://evil.example", Some(&site)));
        assert!(!cors.may_publish("null", Some(&site)));
        assert!(!cors.may_publish("http://chat.example", None));
    }

    #[test]
    fn same_origin_is_scheme_host_and_port() {
        let cors = Cors::new(Vec::new());
        let host = |h: &str| Site::from_host(None, h, None);
        let may = |origin: &str, h: &str| cors.may_publish(origin, host(h).as_ref());
        assert!(may("http://h.example", "h.example:80"));
        assert!(may("http://h.example:80", "h.example"));
        assert!(may("https://h.example", "h.example"));
        assert!(may("http://[::1]:8080", "[::1]:8080"));
        assert!(!may("http://h.example:8080", "h.example"));
        assert!(!may("http://h.example", "h.example:8080"));
        assert!(!may("https://h.example", "h.example:80"));
        assert!(!may("ftp://h.example", "h.example"));
        assert!(!may("http://h.example:x", "h.example"));
    }

    #[test]
    fn loopback_hosts() {
        let allowed = vec!["chat.example".to_owned(), "other.example:8080".to_owned()];
        for ok in [
            None,
            Some("localhost"),
            Some("LOCALHOST:8080"),
            Some("app.localhost"),
            Some("App.LocalHost:80"),
            Some("127.0.0.1:1"),
            Some("127.9.9.9"),
            Some("[::1]:8080"),
            Some("chat.example:443"),
            Some("Chat.Example"),
            Some("other.example:8080"),
        ] {
            assert!(host_allowed(ok, &allowed), "{ok:?}");
        }
        for bad in [
            "rebind.example:8080",
            "other.example:80",
            "10.0.0.1",
            "[::2]",
            "localhost.evil.example",
            "evillocalhost",
            "",
            ":80",
        ] {
            assert!(!host_allowed(Some(bad), &allowed), "{bad:?}");
        }
    }
}
