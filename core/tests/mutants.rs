//! Tests added for mutants that cargo-mutants found uncaught (see docs/TESTING.md, "Mutation
//! testing"): each pins a behaviour that no other test looked at, with exact values.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use parlor_core::Config;
use sim::Sim;

/// Addresses the rate limit tracks at most before it forgets full buckets (`MAX_RATE_ENTRIES`
/// in core's `rate.rs`).
const RATE_ENTRIES: u32 = 65_536;

/// The value of metric `name` (a line `name value`) in the `/metrics` text.
fn metric(s: &mut Sim, name: &str) -> u64 {
    let r = s.get("/metrics");
    let text = r.text().to_owned();
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

// --- batch.rs ------------------------------------------------------------------------------

#[test]
fn an_answer_at_once_says_close_or_keep_alive_as_asked() {
    let mut s = Sim::default();
    assert_eq!(s.publish("r", "hi").status, 200);
    for format in ["", "&format=json"] {
        let (c, r) = s.request(&format!(
            "GET /subscribe?room=r&since=0{format} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(
            (r.status, r.header("Connection")),
            (200, Some("close")),
            "{format}"
        );
        assert!(
            s.is_closed(c),
            "{format}: still open after Connection: close"
        );
        let (c, r) = s.request(&format!(
            "GET /subscribe?room=r&since=0{format} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert_eq!(
            (r.status, r.header("Connection")),
            (200, Some("keep-alive")),
            "{format}"
        );
        assert!(!s.is_closed(c), "{format}");
    }
}

#[test]
fn a_json_batch_counts_each_message_delivered() {
    let mut s = Sim::new(Config {
        batch_messages: 10,
        ..Config::default()
    });
    for text in ["a", "b", "c"] {
        assert_eq!(s.publish("r", text).status, 200);
    }
    let r = s.get("/subscribe?room=r&since=0&format=json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(metric(&mut s, "parlor_messages_delivered_total"), 3);
    let r2 = s.get("/subscribe?room=r&since=0");
    assert_eq!((r2.status, r2.text()), (200, "a"));
    assert_eq!(metric(&mut s, "parlor_messages_delivered_total"), 4);
}

#[test]
fn a_poll_timeout_says_close_or_keep_alive_as_asked() {
    let mut s = Sim::default();
    let timeout = s.server.config().poll_timeout;
    let close = s.connect();
    s.feed(
        close,
        "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let keep = s.connect();
    s.feed(
        keep,
        "GET /subscribe?room=r HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    s.advance(timeout);
    let r = s.response(close);
    assert_eq!((r.status, r.header("Connection")), (204, Some("close")));
    assert!(s.is_closed(close));
    let r = s.response(keep);
    assert_eq!(
        (r.status, r.header("Connection")),
        (204, Some("keep-alive"))
    );
    assert!(!s.is_closed(keep));
}

// --- rate.rs -------------------------------------------------------------------------------

/// The `n`th of many distinct client addresses.
fn addr(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// One publish from `ip` on a connection of its own; its status.
fn publish_from(s: &mut Sim, ip: IpAddr) -> u16 {
    let c = s.connect_from(ip);
    s.feed(
        c,
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n\
         Connection: close\r\nContent-Length: 2\r\n\r\nhi",
    );
    s.response(c).status
}

fn rate_sim(rate: u32) -> Sim {
    Sim::new(Config {
        publish_rate: rate,
        publish_burst: 1,
        ..Config::default()
    })
}

#[test]
fn a_full_rate_table_forgets_only_refilled_buckets() {
    // Two publishes a second, bursts of one: an empty bucket is full again after 0.5 s.
    let mut s = rate_sim(2);
    let a = addr(0);
    for n in 0..RATE_ENTRIES {
        assert_eq!(publish_from(&mut s, addr(n)), 200, "address {n}");
    }
    // 0.6 s later every bucket has refilled; `a` empties its own again.
    s.advance(Duration::from_millis(600));
    assert_eq!(publish_from(&mut s, a), 200);
    assert_eq!(publish_from(&mut s, a), 429);
    // A new address finds the table full: the refilled buckets are forgotten, `a`'s is kept
    // (so it is not cleared either).
    assert_eq!(publish_from(&mut s, addr(RATE_ENTRIES)), 200);
    assert_eq!(
        publish_from(&mut s, a),
        429,
        "a drained bucket was forgotten"
    );
    assert_eq!(publish_from(&mut s, addr(RATE_ENTRIES)), 429);
}

#[test]
fn a_rate_table_full_of_drained_buckets_starts_over() {
    let mut s = rate_sim(1);
    let a = addr(0);
    for n in 0..RATE_ENTRIES {
        assert_eq!(publish_from(&mut s, addr(n)), 200, "address {n}");
    }
    assert_eq!(publish_from(&mut s, a), 429);
    // Nothing refilled: forgetting the full buckets frees nothing, so the table is cleared
    // for the new address, and `a` starts afresh too.
    let new = addr(RATE_ENTRIES);
    assert_eq!(publish_from(&mut s, new), 200);
    assert_eq!(publish_from(&mut s, new), 429);
    assert_eq!(publish_from(&mut s, a), 200, "the table was not cleared");
    assert_eq!(publish_from(&mut s, a), 429);
}

// --- page.rs -------------------------------------------------------------------------------

#[test]
fn the_page_says_close_or_keep_alive_as_asked() {
    let mut s = Sim::default();
    for method in ["GET", "HEAD"] {
        let cases = [
            ("HTTP/1.1\r\nHost: h", None),
            ("HTTP/1.1\r\nHost: h\r\nConnection: close", Some("close")),
            ("HTTP/1.0\r\nConnection: keep-alive", Some("keep-alive")),
        ];
        for (rest, expected) in cases {
            let c = s.connect();
            s.feed(c, format!("{method} /chat.css {rest}\r\n\r\n"));
            let raw = s.received(c);
            let text = String::from_utf8_lossy(&raw);
            assert!(
                text.starts_with("HTTP/1.1 200 OK\r\n"),
                "{method} {rest}: {text}"
            );
            let head = text.split("\r\n\r\n").next().unwrap();
            let connection = head.lines().find_map(|l| l.strip_prefix("Connection: "));
            assert_eq!(connection, expected, "{method} {rest}");
            assert_eq!(s.is_closed(c), expected == Some("close"), "{method} {rest}");
        }
    }
}

#[test]
fn a_bucket_refills_at_its_rate() {
    // Four publishes a second: an empty bucket holds one token again after 250 ms, not before.
    let mut s = rate_sim(4);
    let a = addr(1);
    assert_eq!(publish_from(&mut s, a), 200);
    // An empty bucket at four a second is refilled within a second: `Retry-After` says 1.
    let c = s.connect_from(a);
    s.feed(c, sim::publish_req("r", "hi"));
    let r = s.response(c);
    assert_eq!((r.status, r.header("Retry-After")), (429, Some("1")));
    s.advance(Duration::from_millis(200));
    assert_eq!(publish_from(&mut s, a), 429);
    s.advance(Duration::from_millis(50));
    assert_eq!(publish_from(&mut s, a), 200);
    assert_eq!(publish_from(&mut s, a), 429);
}

// --- timers.rs -----------------------------------------------------------------------------

#[test]
fn a_request_begun_on_an_idle_connection_gets_the_head_timeout() {
    let mut s = Sim::new(Config {
        head_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    });
    let c = s.connect();
    s.advance(Duration::from_secs(1));
    s.feed(c, sim::get_req("/healthz"));
    assert_eq!(s.response(c).status, 200);
    // Idle now, until 11 s; a request begun at 5 s must be whole by 7 s.
    s.advance(Duration::from_secs(4));
    s.feed(c, "GET /healthz HTTP/1.1\r\n");
    s.advance(Duration::from_millis(1999));
    assert!(s.received(c).is_empty() && !s.is_closed(c));
    s.advance(Duration::from_millis(1));
    let r = s.response(c);
    assert_eq!(r.status, 408);
    assert!(s.is_closed(c));
}

// --- http/request.rs ------------------------------------------------------------------------

#[test]
fn a_request_refused_after_its_head_parsed_keeps_its_cors_headers() {
    const ORIGIN: &str = "https://ok.example";
    let mut s = Sim::new(Config {
        allow_origins: vec![ORIGIN.into()],
        ..Config::default()
    });
    // The body is declared too large: the head parsed, the request is refused 413, and the
    // browser must still be let to read why.
    let too_large = |origin: &str| {
        format!(
            "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\n\
             Content-Length: 999999999\r\n\r\n"
        )
    };
    let (_, r) = s.request(&too_large(ORIGIN));
    assert_eq!(r.status, 413);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert_eq!(r.header("Vary"), Some("Origin"));
    // An origin not on the list gets none.
    let (_, r) = s.request(&too_large("https://other.example"));
    assert_eq!(r.status, 413);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

// --- routes/mod.rs --------------------------------------------------------------------------

#[test]
fn head_healthz_is_the_get_head_without_its_body() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, "HEAD /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        String::from_utf8(s.received(c)).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"
    );
}

#[test]
fn a_preflight_says_close_when_asked() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        "OPTIONS /publish HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let r = s.response(c);
    assert_eq!(
        (r.status, r.header("Allow"), r.header("Connection")),
        (204, Some("POST"), Some("close"))
    );
    assert!(s.is_closed(c));
}

#[test]
fn head_metrics_has_no_body_and_get_metrics_says_close_when_asked() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, "HEAD /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
    let raw = String::from_utf8(s.received(c)).unwrap();
    let length: usize = raw
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    assert!(length > 0);
    assert!(raw.ends_with("\r\n\r\n"), "{raw}");
    assert_eq!(raw.matches("\r\n\r\n").count(), 1, "a body followed: {raw}");
    let c = s.connect();
    s.feed(
        c,
        "GET /metrics HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let r = s.response(c);
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert!(s.is_closed(c));
}

// --- routes/publish.rs ----------------------------------------------------------------------

#[test]
fn a_message_id_is_1_to_128_bytes() {
    let mut s = Sim::default();
    let publish = |s: &mut Sim, id: &str| {
        let body = format!("message=hi&id={id}");
        let (_, r) = s.request(&format!(
            "POST /publish?room=r HTTP/1.1\r\nHost: h\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        (r.status, r.text().to_owned())
    };
    for ok in ["a".to_owned(), "a".repeat(128)] {
        assert_eq!(publish(&mut s, &ok).0, 200, "{} bytes", ok.len());
    }
    for bad in ["".to_owned(), "a".repeat(129), "a".repeat(1000)] {
        assert_eq!(
            publish(&mut s, &bad),
            (400, "id must be 1 to 128 bytes\n".to_owned()),
            "{} bytes",
            bad.len()
        );
    }
}

#[test]
fn a_publish_answer_says_close_when_asked() {
    let mut s = Sim::default();
    for accept in ["text/plain", "application/json"] {
        let c = s.connect();
        s.feed(
            c,
            format!(
                "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nAccept: {accept}\r\n\
                 Connection: close\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            ),
        );
        let r = s.response(c);
        assert_eq!(
            (r.status, r.header("Connection")),
            (200, Some("close")),
            "{accept}"
        );
        assert!(s.is_closed(c), "{accept}");
    }
}

// --- conn/ ----------------------------------------------------------------------------------

/// The bytes of every `Send` in the log so far.
fn bytes_sent(s: &Sim) -> u64 {
    s.log
        .iter()
        .map(|o| match o {
            parlor_core::Output::Send { data, .. } => data.len() as u64,
            _ => 0,
        })
        .sum()
}

#[test]
fn the_connection_counters_are_exact() {
    let mut s = Sim::default();
    let a = s.connect();
    s.feed(a, sim::get_req("/healthz"));
    s.feed(a, sim::get_req("/healthz"));
    assert_eq!(s.responses(a).len(), 2);
    let _idle = s.connect();
    let sent = bytes_sent(&s);
    // The /metrics request is the third accept and the third request; its own answer is sent
    // after it is written, so the bytes are those of the two answers before it.
    let r = s.get("/metrics");
    let text = r.text();
    for line in [
        "parlor_connections_accepted_total 3".to_owned(),
        "parlor_requests_total 3".to_owned(),
        format!("parlor_bytes_sent_total {sent}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn a_head_request_refused_by_the_reader_gets_no_body() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        "HEAD /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n",
    );
    let got = String::from_utf8(s.received(c)).unwrap();
    assert_eq!(
        got,
        "HTTP/1.1 413 Content Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: 23\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Connection: close\r\n\r\n"
    );
    assert!(s.is_closed(c));
}

// --- server.rs ------------------------------------------------------------------------------

#[test]
fn an_unknown_connection_is_an_error_that_names_it() {
    let mut s = Sim::default();
    let c = s.connect();
    s.vanish(c);
    let err = s.server.handle_data(c, b"GET", s.now).unwrap_err();
    assert_eq!(err, parlor_core::Error::UnknownConnection(c));
    assert_eq!(err.to_string(), format!("unknown connection {}", c.0));
}

#[test]
fn the_server_reports_its_config_and_whether_it_is_shutting_down() {
    let mut s = Sim::new(Config {
        poll_timeout: Duration::from_secs(7),
        max_connections: 12,
        ..Config::default()
    });
    let c = s.server.config();
    assert_eq!(
        (c.poll_timeout, c.max_connections),
        (Duration::from_secs(7), 12)
    );
    assert!(!s.server.is_shutting_down());
    s.server.handle_shutdown(s.now);
    s.drain();
    assert!(s.server.is_shutting_down());
}

/// origin.rs `parse_port`: a port is 1 to 5 digits. `008080` names 8080 by its value, but six
/// digits are no port, so the `Origin` is not the site's and its publish is refused.
#[test]
fn an_origin_port_of_six_digits_is_no_port() {
    let mut s = Sim::default();
    let publish = |s: &mut Sim, origin: &str| {
        let (_, r) = s.request(&format!(
            "POST /publish?room=r HTTP/1.1\r\nHost: chat.example:8080\r\nOrigin: {origin}\r\n\
             Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
        ));
        r.status
    };
    assert_eq!(publish(&mut s, "http://chat.example:08080"), 200);
    assert_eq!(publish(&mut s, "http://chat.example:008080"), 403);
}

// --- room.rs --------------------------------------------------------------------------------

#[test]
fn a_message_id_counts_twice_against_the_history_byte_cap() {
    // A message costs its text, its id twice (in the message and as the key of the id map) and
    // 96 bytes: three of 1 + 2 × 10 + 96 = 117 bytes fit in 351 bytes, not in 350.
    for (cap, kept) in [(351, vec!["a", "b", "c"]), (350, vec!["b", "c"])] {
        let mut s = Sim::new(Config {
            history_bytes: cap,
            max_message_bytes: 10,
            ..Config::default()
        });
        for (i, text) in ["a", "b", "c"].into_iter().enumerate() {
            let body = format!("message={text}&id=id-000000{i}");
            let (_, r) = s.request(&format!(
                "POST /publish?room=r HTTP/1.1\r\nHost: h\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
            assert_eq!(r.status, 200, "{body}");
        }
        let r = s.get("/subscribe?room=r&since=0&format=json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let texts: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, kept, "history_bytes {cap}");
    }
}

#[test]
fn a_room_lives_room_idle_after_its_last_use_not_after_the_start() {
    let idle = Duration::from_secs(60);
    let mut s = Sim::new(Config {
        room_idle: idle,
        ..Config::default()
    });
    s.advance(idle / 2);
    assert_eq!(s.publish("a", "x").status, 200);
    s.advance(idle - Duration::from_millis(1));
    assert_eq!(metric(&mut s, "parlor_rooms"), 1, "freed before its time");
    s.advance(Duration::from_millis(1));
    assert_eq!(metric(&mut s, "parlor_rooms"), 0);
}

#[test]
fn at_the_room_cap_a_room_left_empty_by_an_earlier_request_makes_way() {
    // A poll whose cursor is ahead of the room creates the room and is refused: the room, left
    // with neither history nor waiters, makes way for the next one at once, even within the same
    // read (a pipelined publish), not only at the end of it.
    let mut s = Sim::new(Config {
        max_rooms: 1,
        ..Config::default()
    });
    let c = s.connect();
    let poll = sim::get_req(&format!("/subscribe?room=a&since={}", s.cursor(5)));
    s.feed(c, format!("{poll}{}", sim::publish_req("b", "x")));
    let answers: Vec<_> = s
        .responses(c)
        .iter()
        .map(|r| (r.status, r.text().to_owned()))
        .collect();
    let published = format!("{}\n", s.cursor(1));
    assert_eq!(
        answers,
        [
            (400, "cursor is ahead of the room\n".to_owned()),
            (200, published)
        ]
    );
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    assert_eq!(s.get("/subscribe?room=b&since=0").text(), "x");
}

#[test]
fn an_idle_room_is_a_deadline_of_its_own() {
    // With no connection open, the room's expiry is the only deadline: an adapter that sleeps
    // until `poll_timeout` must wake for it.
    let idle = Duration::from_secs(60);
    let mut s = Sim::new(Config {
        room_idle: idle,
        ..Config::default()
    });
    let t = s.now;
    let (c, r) = s.request(&sim::publish_req("a", "x"));
    assert_eq!(r.status, 200);
    s.vanish(c);
    assert_eq!(s.server.poll_timeout(), Some(t + idle));
    assert!(s.next_deadline());
    assert_eq!((s.now, metric(&mut s, "parlor_rooms")), (t + idle, 0));
}

#[test]
fn a_message_costing_more_than_the_history_byte_cap_alone_is_kept() {
    // `--history-bytes` may be as small as `--max-message-bytes`, below one message's cost (its
    // text and 96 bytes): the newest message is kept, alone.
    let mut s = Sim::new(Config {
        history_bytes: 10,
        max_message_bytes: 10,
        ..Config::default()
    });
    for text in ["a", "b"] {
        assert_eq!(s.publish("r", text).status, 200);
        let r = s.get("/subscribe?room=r&since=0");
        assert_eq!((r.text(), r.header("Parlor-Gap")), (text, None));
    }
}
