//! Behind a reverse proxy (`--trusted-proxy`): the forwarded client address keys the rate limit
//! and counts the polls it holds against the per-address cap (the proxy's own connections are
//! not capped per address), the forwarded origin is the one the same-origin rule compares, and
//! nobody else's forwarding headers count.

mod sim;

use std::net::IpAddr;
use std::time::Duration;

use parlor_core::Config;
use sim::Sim;

const PROXY: &str = "127.0.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn behind_proxy(extra: Config) -> Sim {
    Sim::new(Config {
        trusted_proxies: vec![PROXY.parse().unwrap()],
        ..extra
    })
}

/// A text publish from `peer` with these extra header lines.
fn publish_from(sim: &mut Sim, peer: &str, headers: &str) -> sim::Resp {
    let c = sim.connect_from(ip(peer));
    sim.feed(
        c,
        format!(
            "POST /publish?room=r HTTP/1.1\r\nContent-Type: text/plain\r\n{headers}\
             Content-Length: 2\r\n\r\nhi"
        ),
    );
    sim.response(c)
}

/// nginx with `proxy_set_header Host $host` drops the port the browser used.
const NGINX: &str = "Host: 127.0.0.1\r\nOrigin: http://127.0.0.1:19910\r\n";

#[test]
fn the_nginx_case_is_same_origin_through_a_trusted_proxy() {
    let mut sim = behind_proxy(Config::default());
    let x = "X-Forwarded-For: 127.0.0.2\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: 127.0.0.1\r\nX-Forwarded-Port: 19910\r\n";
    assert_eq!(
        publish_from(&mut sim, PROXY, &format!("{NGINX}{x}")).status,
        200
    );
    let rfc = "Forwarded: for=127.0.0.2;proto=http;host=\"127.0.0.1:19910\"\r\n";
    assert_eq!(
        publish_from(&mut sim, PROXY, &format!("{NGINX}{rfc}")).status,
        200
    );
    // Without the forwarded port the origins differ, as they should.
    let r = publish_from(&mut sim, PROXY, NGINX);
    assert_eq!(
        (r.status, r.text()),
        (403, "cross-origin publish not allowed\n")
    );
    // Untrusted, the same headers count for nothing.
    let mut direct = Sim::default();
    assert_eq!(
        publish_from(&mut direct, PROXY, &format!("{NGINX}{x}")).status,
        403
    );
}

#[test]
fn a_forwarded_origin_is_compared_by_scheme_host_and_port() {
    let mut sim = behind_proxy(Config::default());
    let tls =
        "Host: 127.0.0.1:8080\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: chat.example\r\n";
    let ok = format!("Origin: https://chat.example\r\n{tls}");
    assert_eq!(publish_from(&mut sim, PROXY, &ok).status, 200);
    for origin in [
        "http://chat.example",
        "https://chat.example:8443",
        "http://127.0.0.1:8080",
    ] {
        let r = publish_from(&mut sim, PROXY, &format!("Origin: {origin}\r\n{tls}"));
        assert_eq!(r.status, 403, "{origin}");
    }
}

#[test]
fn the_rate_limit_applies_per_forwarded_client() {
    let mut sim = behind_proxy(Config {
        publish_rate: 1,
        publish_burst: 1,
        ..Config::default()
    });
    let from = |client: &str| format!("Host: h\r\nX-Forwarded-For: {client}\r\n");
    assert_eq!(
        publish_from(&mut sim, PROXY, &from("192.0.2.1")).status,
        200
    );
    assert_eq!(
        publish_from(&mut sim, PROXY, &from("192.0.2.1")).status,
        429
    );
    // Another client behind the same proxy has its own bucket.
    assert_eq!(
        publish_from(&mut sim, PROXY, &from("192.0.2.2")).status,
        200
    );
    // A client cannot get a fresh bucket by writing its own X-Forwarded-For: nginx appends.
    let spoof = from("203.0.113.9, 192.0.2.1");
    assert_eq!(publish_from(&mut sim, PROXY, &spoof).status, 429);
    // A direct client's X-Forwarded-For is ignored: it is keyed by its own address.
    assert_eq!(
        publish_from(&mut sim, "192.0.2.50", &from("192.0.2.77")).status,
        200
    );
    assert_eq!(
        publish_from(&mut sim, "192.0.2.50", &from("192.0.2.78")).status,
        429
    );
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        publish_from(&mut sim, PROXY, &from("192.0.2.1")).status,
        200
    );
}

#[test]
fn malformed_forwarding_headers_are_counted_and_taken_as_direct() {
    let mut sim = behind_proxy(Config {
        publish_rate: 1,
        publish_burst: 1,
        ..Config::default()
    });
    let bad = "Host: h\r\nForwarded: for=[2001:db8::1]\r\n";
    assert_eq!(publish_from(&mut sim, PROXY, bad).status, 200);
    // Taken as from the proxy itself: the proxy's own bucket is now empty.
    let plain = "Host: h\r\n";
    assert_eq!(publish_from(&mut sim, PROXY, plain).status, 429);
    // From an untrusted peer the same header is not even parsed, so not counted.
    assert_eq!(publish_from(&mut sim, "192.0.2.9", bad).status, 200);
    let metrics = sim.get("/metrics");
    assert!(
        metrics
            .text()
            .contains("\nparlor_forwarded_malformed_total 1\n"),
        "{}",
        metrics.text()
    );
}

#[test]
fn a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    let mut sim = behind_proxy(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    let conns: Vec<_> = (0..5).map(|_| sim.connect_from(ip(PROXY))).collect();
    for c in &conns {
        assert!(
            !sim.is_closed(*c),
            "a trusted proxy's connection was refused"
        );
    }
    // Any other address still is.
    let others: Vec<_> = (0..3).map(|_| sim.connect_from(ip("192.0.2.1"))).collect();
    assert!(!sim.is_closed(others[1]));
    assert_eq!(sim.response(others[2]).status, 503);
}

#[test]
fn polls_of_a_trusted_proxy_that_forwards_nothing_are_not_capped() {
    // Without a forwarding header the request is the proxy's own, a direct client: its polls
    // are not counted per address, as its connections are not.
    let mut sim = behind_proxy(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    let polls: Vec<_> = (0..3)
        .map(|_| {
            let c = sim.connect_from(ip(PROXY));
            sim.feed(c, "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\n\r\n");
            c
        })
        .collect();
    assert_eq!(sim.server.held_count(), 3);
    for c in polls {
        assert!(sim.responses(c).is_empty(), "{c:?} was answered");
    }
    sim.server.check_invariants().unwrap();
}

/// A poll for room `r` from `client` behind the proxy, on a new connection from the proxy.
fn poll_via_proxy(sim: &mut Sim, client: &str) -> parlor_core::ConnId {
    let c = sim.connect_from(ip(PROXY));
    sim.feed(
        c,
        format!("GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: {client}\r\n\r\n"),
    );
    c
}

#[test]
fn the_per_address_cap_counts_polls_per_forwarded_client() {
    let mut sim = behind_proxy(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    let a1 = poll_via_proxy(&mut sim, "192.0.2.1");
    let a2 = poll_via_proxy(&mut sim, "192.0.2.1");
    assert_eq!(sim.server.held_count(), 2);
    let a3 = poll_via_proxy(&mut sim, "192.0.2.1");
    let refused = sim.response(a3);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.text(), "too many connections from this address\n");
    assert_eq!(refused.header("Retry-After"), Some("2"));
    assert!(
        !sim.is_closed(a3),
        "the proxy's pooled connection stays open"
    );
    // Another client behind the same proxy has its own count.
    let b = poll_via_proxy(&mut sim, "192.0.2.2");
    assert_eq!(sim.server.held_count(), 3);
    // Answered polls no longer count: A may poll again, on the connection refused before.
    assert_eq!(
        publish_from(&mut sim, "192.0.2.9", "Host: h\r\n").status,
        200
    );
    for c in [a1, a2, b] {
        assert_eq!(sim.response(c).status, 200);
    }
    sim.feed(
        a3,
        "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n",
    );
    assert_eq!(sim.server.held_count(), 1);
    // A closed connection's poll no longer counts either.
    sim.vanish(a3);
    let again: Vec<_> = (0..2)
        .map(|_| poll_via_proxy(&mut sim, "192.0.2.1"))
        .collect();
    assert_eq!(sim.server.held_count(), 2);
    for c in again {
        assert!(sim.responses(c).is_empty(), "{c:?} was answered");
    }
    sim.server.check_invariants().unwrap();
}

#[test]
fn event_streams_count_per_forwarded_client_too() {
    let mut sim = behind_proxy(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    let stream = |sim: &mut Sim, client: &str| {
        let c = sim.connect_from(ip(PROXY));
        sim.feed(
            c,
            format!("GET /events?room=r HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: {client}\r\n\r\n"),
        );
        c
    };
    let poll = poll_via_proxy(&mut sim, "192.0.2.1");
    let s1 = stream(&mut sim, "192.0.2.1");
    let s2 = stream(&mut sim, "192.0.2.1");
    let refused = sim.response(s2);
    assert_eq!(
        (refused.status, refused.text()),
        (503, "too many connections from this address\n")
    );
    assert!(!sim.is_closed(s1));
    let other = stream(&mut sim, "192.0.2.2");
    // A stream that goes away frees its place.
    sim.vanish(s1);
    let s3 = stream(&mut sim, "192.0.2.1");
    for c in [poll, other, s3] {
        assert!(!sim.is_closed(c), "{c:?} closed");
    }
    assert_eq!(sim.server.held_count(), 1);
    sim.server.check_invariants().unwrap();
}

#[test]
fn the_loopback_host_check_reads_the_forwarded_host() {
    let on_loopback = |allow_hosts: Vec<String>| {
        behind_proxy(Config {
            listen_loopback: true,
            allow_hosts,
            ..Config::default()
        })
    };
    let public =
        "Host: 127.0.0.1\r\nX-Forwarded-Host: chat.example\r\nX-Forwarded-Proto: https\r\n";
    let mut sim = on_loopback(Vec::new());
    let r = publish_from(&mut sim, PROXY, public);
    assert_eq!(
        (r.status, r.text()),
        (421, "this server answers only to localhost\n")
    );
    let mut sim = on_loopback(vec!["chat.example".into()]);
    let browser = format!("{public}Origin: https://chat.example\r\n");
    assert_eq!(publish_from(&mut sim, PROXY, &browser).status, 200);
    // A direct client cannot pass the check by claiming a forwarded loopback host.
    let mut sim = on_loopback(Vec::new());
    let rebind = "Host: rebind.example\r\nX-Forwarded-Host: 127.0.0.1\r\n";
    assert_eq!(publish_from(&mut sim, "192.0.2.1", rebind).status, 421);
    // The nginx case on loopback: Host and forwarded host are loopback addresses.
    let nginx = "Host: 127.0.0.1\r\nOrigin: http://127.0.0.1:19910\r\n\
                 X-Forwarded-Host: 127.0.0.1\r\nX-Forwarded-Port: 19910\r\nX-Forwarded-Proto: http\r\n";
    assert_eq!(publish_from(&mut sim, PROXY, nginx).status, 200);
}
