//! Tests of the forwarding rules: trusted proxies, `Forwarded` and `X-Forwarded-*`, sites.

use super::header::Element;
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
        fwd("for=1.2.3.4;proto"), // a parameter name with no `=`, at the very end
        fwd("for"),
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
fn a_trusted_proxy_without_forwarding_headers_is_a_direct_client() {
    // The proxy's own request (a health check, say): nothing is forwarded, so nothing is read
    // from the headers, and the client is the proxy itself, with its own `Host`.
    let f = trusting(&["127.0.0.1"]);
    let direct = Client {
        addr: ip("127.0.0.1"),
        site: None,
        forwarded: false,
        malformed: false,
    };
    for host in [Some("chat.example:8080"), None] {
        let c = f.resolve(ip("127.0.0.1"), host, &ForwardedHeaders::default());
        assert_eq!(c, direct, "{host:?}");
    }
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
    // A quoted string holds tabs, spaces and visible characters (RFC 9110 qdtext), no other
    // control character.
    assert_eq!(
        parse_forwarded("host=\"a\tb c~\""),
        Some(vec![Element {
            host: Some("a\tb c~".into()),
            ..Element::default()
        }])
    );
    for bad in ["a\u{1}b", "a\u{7f}b", "a\rb", "\u{0}"] {
        assert_eq!(parse_forwarded(&format!("host=\"{bad}\"")), None, "{bad:?}");
    }
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
