//! Exact boundaries of every cap and the accounting behind them, driven through the simulation
//! harness. Each test pins a limit from both sides (the last value that passes, the first that
//! does not), so an off-by-one or a dropped bound in the core fails here; see docs/TESTING.md.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use parlor_core::Config;
use sim::{get_req, publish_req, Sim};

const ORIGIN: &str = "https://ok.example";

fn cors_config() -> Config {
    Config {
        allow_origins: vec![ORIGIN.into()],
        ..Config::default()
    }
}

/// The exact bytes of one `GET /healthz` answer on a keep-alive connection.
fn healthz_len() -> usize {
    Sim::default().get("/healthz").raw.len()
}

// --- unsent accounting ----------------------------------------------------------------------

#[test]
fn a_reading_client_gets_far_more_than_the_unsent_cap_over_one_connection() {
    let cap = 4096;
    let mut s = Sim::new(Config {
        max_unsent_bytes: cap,
        max_message_bytes: 16,
        ..Config::default()
    });
    let c = s.connect();
    let mut total = 0;
    // One request at a time, each answer flushed by the harness before the next request.
    for i in 0..400 {
        s.feed(c, get_req("/healthz"));
        let r = s.response(c);
        assert_eq!((r.status, r.text()), (200, "ok\n"), "request {i}");
        total += r.raw.len();
        assert!(!s.is_closed(c), "cut off after {total} bytes");
    }
    assert!(total > 10 * cap, "only {total} bytes sent");
    // Batches of pipelined requests whose answers just fit under the cap, each batch flushed
    // before the next arrives: fine for as long as the client keeps reading.
    let k = cap / healthz_len();
    for i in 0..20 {
        s.feed(c, get_req("/healthz").repeat(k));
        assert_eq!(s.responses(c).len(), k, "batch {i}");
        assert!(!s.is_closed(c), "cut off at batch {i}");
    }
}

/// Answers that make an unsent cap large enough for one tiny message as JSON (`validate`).
const K: usize = 12;

/// A config whose unsent cap is `cap` (with messages small enough for it).
fn unsent_config(cap: usize) -> Config {
    Config {
        max_unsent_bytes: cap,
        max_message_bytes: 16,
        ..Config::default()
    }
}

#[test]
fn unsent_cap_is_exact() {
    let len = healthz_len();
    // A stalled client may have exactly the cap unsent...
    let mut s = Sim::new(unsent_config(K * len));
    let c = s.connect();
    s.stall(c);
    s.feed(c, get_req("/healthz").repeat(K));
    assert!(!s.is_closed(c), "exactly the cap unsent is allowed");
    assert_eq!(s.responses(c).len(), K);
    // ...and one byte more cuts it off (Abort, not a graceful Close).
    s.feed(c, get_req("/healthz"));
    assert!(s.is_closed(c) && s.peers[&c].aborted);

    let mut s = Sim::new(unsent_config(K * len - 1));
    let c = s.connect();
    s.stall(c);
    s.feed(c, get_req("/healthz").repeat(K - 1));
    assert!(!s.is_closed(c));
    s.feed(c, get_req("/healthz"));
    assert!(s.is_closed(c) && s.peers[&c].aborted);
}

#[test]
fn a_partial_flush_is_subtracted_exactly() {
    let len = healthz_len();
    let mut s = Sim::new(unsent_config(K * len));
    let c = s.connect();
    s.stall(c);
    s.feed(c, get_req("/healthz").repeat(K));
    // The socket took one byte of the two answers: one more answer is one byte too many.
    s.server.handle_flushed(c, 1, s.now).unwrap();
    s.feed(c, get_req("/healthz"));
    assert!(s.is_closed(c) && s.peers[&c].aborted);

    let mut s = Sim::new(unsent_config(K * len));
    let c = s.connect();
    s.stall(c);
    s.feed(c, get_req("/healthz").repeat(K));
    // The whole first answer was written: one more fits exactly.
    s.server.handle_flushed(c, len, s.now).unwrap();
    s.feed(c, get_req("/healthz"));
    assert!(!s.is_closed(c));
    assert_eq!(s.responses(c).len(), K + 1);
}

// --- cursors --------------------------------------------------------------------------------

#[test]
fn a_cursor_one_past_the_newest_message_is_400() {
    let mut s = Sim::default();
    s.publish("r", "a");
    s.publish("r", "b");
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(3)));
    assert_eq!((r.status, r.text()), (400, "cursor is ahead of the room\n"));
    // The newest message itself is a valid cursor: the poll waits.
    let c = s.connect();
    s.feed(
        c,
        get_req(&format!("/subscribe?room=r&since={}", s.cursor(2))),
    );
    assert!(s.received(c).is_empty());
    assert_eq!(s.server.held_count(), 1);
    // In an empty room, the first cursor of this epoch is already ahead.
    let r = s.get(&format!("/subscribe?room=empty&since={}", s.cursor(1)));
    assert_eq!(r.status, 400);
    let c = s.connect();
    s.feed(
        c,
        get_req(&format!("/subscribe?room=empty&since={}", s.cursor(0))),
    );
    assert!(s.received(c).is_empty(), "cursor 0 of this epoch waits");
}

#[test]
fn the_gap_is_exact_at_the_edge_of_the_history() {
    let mut s = Sim::new(Config {
        history_messages: 3,
        ..Config::default()
    });
    for i in 1..=5 {
        s.publish("r", &format!("m{i}"));
    }
    // Retained: 3, 4, 5. A cursor at 2 missed nothing; at 1 it missed one; at 0-of-epoch two.
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(2)));
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m3", None));
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)));
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m3", Some("1")));
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(0)));
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m3", Some("2")));
    let r = s.get("/subscribe?room=r&since=zz-1");
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m3", Some("2")));
}

// --- connection caps ------------------------------------------------------------------------

#[test]
fn the_connection_cap_admits_exactly_the_configured_number() {
    let mut s = Sim::new(Config {
        max_connections: 3,
        ..Config::default()
    });
    let admitted: Vec<_> = (0..3).map(|_| s.connect()).collect();
    for &c in &admitted {
        assert!(!s.is_closed(c));
        s.feed(c, get_req("/healthz"));
        assert_eq!(s.response(c).status, 200);
    }
    let extra = s.connect();
    let r = s.response(extra);
    assert_eq!(
        (r.status, r.header("Retry-After"), r.text()),
        (503, Some("2"), "too many connections\n")
    );
    assert!(s.is_closed(extra));
    // Its slot is freed: the next one is refused again, the admitted ones still work.
    let extra = s.connect();
    assert_eq!(s.response(extra).status, 503);
    s.vanish(admitted[0]);
    let again = s.connect();
    assert!(!s.is_closed(again));
    assert!(s.received(again).is_empty());
}

#[test]
fn the_per_address_cap_admits_exactly_the_configured_number() {
    let mut s = Sim::new(Config {
        max_connections_per_ip: 2,
        ..Config::default()
    });
    let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let a = s.connect_from(ip);
    let b = s.connect_from(ip);
    assert!(!s.is_closed(a) && !s.is_closed(b));
    let c = s.connect_from(ip);
    let r = s.response(c);
    assert_eq!(
        (r.status, r.text()),
        (503, "too many connections from this address\n")
    );
    // A refused connection does not use up a place once it is closed.
    s.vanish(a);
    let d = s.connect_from(ip);
    assert!(!s.is_closed(d));
}

// --- history caps -----------------------------------------------------------------------------

/// The texts `since=0&format=json` returns for room `r`.
fn retained(s: &mut Sim) -> Vec<String> {
    let r = s.get("/subscribe?room=r&since=0&format=json");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_history_byte_cap_is_exact() {
    // Each message costs its text and 96 bytes (docs/HTTP.md, "Hostile traffic").
    let mut s = Sim::new(Config {
        history_bytes: 10 + 2 * 96,
        max_message_bytes: 10,
        ..Config::default()
    });
    s.publish("r", "aaaa");
    s.publish("r", "bbbbbb");
    assert_eq!(retained(&mut s), ["aaaa", "bbbbbb"], "10 bytes fit in 10");
    s.publish("r", "c");
    assert_eq!(retained(&mut s), ["bbbbbb", "c"], "11 bytes do not");
    // A message larger than what is left evicts everything else and stays.
    s.publish("r", "dddddddddd");
    assert_eq!(retained(&mut s), ["dddddddddd"]);
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)));
    assert_eq!(
        (r.text(), r.header("Parlor-Gap")),
        ("dddddddddd", Some("2"))
    );
}

#[test]
fn the_history_message_cap_is_exact() {
    let mut s = Sim::new(Config {
        history_messages: 3,
        ..Config::default()
    });
    for m in ["a", "b", "c"] {
        s.publish("r", m);
    }
    assert_eq!(retained(&mut s), ["a", "b", "c"]);
    s.publish("r", "d");
    assert_eq!(retained(&mut s), ["b", "c", "d"]);
}

#[test]
fn the_message_size_cap_is_exact() {
    let mut s = Sim::new(Config {
        max_message_bytes: 5,
        ..Config::default()
    });
    assert_eq!(s.publish("r", "12345").status, 200);
    let r = s.publish("r", "123456");
    assert_eq!((r.status, r.text()), (413, "message too large\n"));
    // The cap is on the decoded text, not the body: a 3-byte character is 3 bytes.
    assert_eq!(s.publish("r", "ab\u{2713}").status, 200);
    assert_eq!(s.publish("r", "abc\u{2713}").status, 413);
}

#[test]
fn the_json_batch_cap_is_exact() {
    let mut s = Sim::new(Config {
        batch_messages: 3,
        ..Config::default()
    });
    for i in 1..=4 {
        s.publish("r", &format!("m{i}"));
    }
    assert_eq!(retained(&mut s), ["m1", "m2", "m3"]);
    let r = s.get(&format!(
        "/subscribe?room=r&since={}&format=json",
        s.cursor(1)
    ));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    assert_eq!(v["next"], s.cursor(4));
}

#[test]
fn the_room_cap_is_exact() {
    let mut s = Sim::new(Config {
        max_rooms: 3,
        ..Config::default()
    });
    for room in ["a", "b", "c"] {
        assert_eq!(s.publish(room, "x").status, 200, "{room}");
    }
    // Every room in use (a poll held in each): none may make way for a new one.
    for room in ["a", "b", "c"] {
        let c = s.connect();
        s.feed(c, get_req(&format!("/subscribe?room={room}")));
    }
    assert_eq!(s.publish("d", "x").status, 503);
    // A poll cannot create a room past the cap either, but may use an existing one.
    assert_eq!(s.get("/subscribe?room=d&since=0").status, 503);
    assert_eq!(s.get("/subscribe?room=a&since=0").text(), "x");
}

// --- request body caps ------------------------------------------------------------------------

fn chunked_publish(chunks: &[&str]) -> String {
    let mut req =
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_string();
    for c in chunks {
        req.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
    }
    req.push_str("0\r\n\r\n");
    req
}

fn body_cap(cap: usize) -> Sim {
    let mut config = Config::default();
    config.limits.max_body = cap;
    Sim::new(config)
}

#[test]
fn the_chunked_body_cap_is_exact() {
    let mut s = body_cap(16);
    // Exactly the cap, in one chunk and in several.
    let (c, r) = s.request(&chunked_publish(&["0123456789abcdef"]));
    assert_eq!(r.status, 200);
    assert!(!s.is_closed(c));
    let (_, r) = s.request(&chunked_publish(&["01234567", "89ab", "cdef"]));
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)))
            .text(),
        "0123456789abcdef"
    );
    // One byte over, in one chunk (refused from its size line) and spread over several.
    for chunks in [
        &["0123456789abcdefg"][..],
        &["01234567", "89abcdefg"][..],
        &["0123456789abcdef", "g"][..],
    ] {
        let (c, r) = s.request(&chunked_publish(chunks));
        assert_eq!(
            (r.status, r.text(), r.header("Connection")),
            (413, "request body too large\n", Some("close")),
            "{chunks:?}"
        );
        assert!(s.is_closed(c));
    }
}

#[test]
fn the_content_length_body_cap_is_exact() {
    let mut s = body_cap(16);
    let (_, r) = s.request(&publish_req("r", "0123456789abcdef"));
    assert_eq!(r.status, 200);
    let (c, r) = s.request(&publish_req("r", "0123456789abcdefg"));
    assert_eq!((r.status, r.text()), (413, "request body too large\n"));
    assert!(s.is_closed(c));
}

// --- pipelining --------------------------------------------------------------------------------

#[test]
fn reading_pauses_exactly_at_the_pipeline_cap() {
    let req = get_req("/healthz");
    let mut s = Sim::new(Config {
        max_pipeline_bytes: 2 * req.len(),
        ..Config::default()
    });
    let c = s.connect();
    s.feed(c, get_req("/subscribe"));
    s.feed(c, &req);
    assert!(!s.peers[&c].paused, "one byte under the cap: still reading");
    s.feed(c, &req[..req.len() - 1]);
    assert!(!s.peers[&c].paused);
    s.feed(c, &req[req.len() - 1..]);
    assert!(s.peers[&c].paused, "at the cap: paused");
    s.publish("main", "m");
    assert!(!s.peers[&c].paused);
    let rs = s.responses(c);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 200]
    );
    assert_eq!(rs[0].text(), "m");
}

// --- publish rate -------------------------------------------------------------------------------

fn publish_from(s: &mut Sim, ip: [u8; 4]) -> sim::Resp {
    let c = s.connect_from(IpAddr::V4(Ipv4Addr::from(ip)));
    s.feed(c, publish_req("r", "x"));
    s.response(c)
}

#[test]
fn the_rate_burst_is_exact_and_does_not_grow_past_its_size() {
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 3,
        ..Config::default()
    });
    let ip = [127, 0, 0, 9];
    for i in 0..3 {
        assert_eq!(publish_from(&mut s, ip).status, 200, "publish {i}");
    }
    let r = publish_from(&mut s, ip);
    assert_eq!(
        (r.status, r.header("Retry-After"), r.text()),
        (429, Some("1"), "too many messages, slow down\n")
    );
    // A long quiet spell refills the bucket to the burst, never more.
    s.advance(Duration::from_secs(3600));
    for i in 0..3 {
        assert_eq!(
            publish_from(&mut s, ip).status,
            200,
            "publish {i} after a pause"
        );
    }
    assert_eq!(publish_from(&mut s, ip).status, 429);
    // Half a token is not a token.
    s.advance(Duration::from_millis(500));
    let r = publish_from(&mut s, ip);
    assert_eq!((r.status, r.header("Retry-After")), (429, Some("1")));
    s.advance(Duration::from_millis(500));
    assert_eq!(publish_from(&mut s, ip).status, 200);
    assert_eq!(publish_from(&mut s, ip).status, 429);
}

#[test]
fn retry_after_is_the_time_to_the_next_token() {
    // One token a second: an empty bucket says to come back in 1 s.
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 1,
        ..Config::default()
    });
    let ip = [127, 0, 0, 7];
    assert_eq!(publish_from(&mut s, ip).status, 200);
    let r = publish_from(&mut s, ip);
    assert_eq!((r.status, r.header("Retry-After")), (429, Some("1")));
    // A refused publish does not take a token: after one second there is one.
    s.advance(Duration::from_secs(1));
    assert_eq!(publish_from(&mut s, ip).status, 200);
}

#[test]
fn a_repeated_id_is_not_rate_limited() {
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 1,
        ..Config::default()
    });
    let body = r#"{"message":"once","id":"k"}"#;
    let req = format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(s.request(&req).1.status, 200);
    let r = s.request(&req).1;
    assert_eq!(
        r.status, 200,
        "a retry of a published message costs nothing"
    );
    assert_eq!(r.text(), format!("{{\"cursor\":\"{}\"}}", s.cursor(1)));
}

// --- CORS ---------------------------------------------------------------------------------------

fn subscribe_from_origin(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: h\r\nOrigin: {ORIGIN}\r\n\r\n")
}

const CORS_HEADERS: &str = "Access-Control-Allow-Origin: https://ok.example\r\n\
                            Access-Control-Expose-Headers: Parlor-Cursor, Parlor-Gap, Parlor-Reset, Retry-After\r\n\
                            Vary: Origin\r\n";

#[test]
fn a_poll_timeout_for_a_listed_origin_carries_cors_headers() {
    let mut s = Sim::new(cors_config());
    s.publish("r", "a");
    let c = s.connect();
    s.feed(
        c,
        subscribe_from_origin(&format!("/subscribe?room=r&since={}", s.cursor(1))),
    );
    s.advance(Duration::from_secs(25));
    let r = s.response(c);
    assert_eq!(
        String::from_utf8(r.raw).unwrap(),
        format!(
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Parlor-Cursor: {}\r\n{CORS_HEADERS}\r\n",
            s.cursor(1)
        )
    );
    // since=0 times out with cursor 0, with the same headers.
    s.feed(c, subscribe_from_origin("/subscribe?room=empty&since=0"));
    s.advance(Duration::from_secs(25));
    let r = s.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Parlor-Cursor"), Some("0"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    assert_eq!(r.header("Vary"), Some("Origin"));
    // Without an Origin there are none.
    s.feed(c, get_req("/subscribe?room=empty&since=0"));
    s.advance(Duration::from_secs(25));
    let r = s.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    assert_eq!(r.header("Vary"), None);
}

#[test]
fn vary_origin_is_sent_wherever_cors_applies() {
    let mut s = Sim::new(cors_config());
    // A publish from the listed origin.
    let body = "x";
    let (_, p) = s.request(&format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nOrigin: {ORIGIN}\r\nContent-Length: 1\r\n\r\n{body}"
    ));
    assert_eq!(
        String::from_utf8(p.raw).unwrap(),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nParlor-Cursor: {c}\r\n\
             {CORS_HEADERS}\r\n{c}\n",
            s.cursor(1).len() + 1,
            c = s.cursor(1),
        )
    );
    // A poll answered at once, plain and JSON, with a gap.
    let (_, r) = s.request(&subscribe_from_origin("/subscribe?room=r&since=0"));
    assert_eq!(
        String::from_utf8(r.raw).unwrap(),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 1\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nParlor-Cursor: {}\r\n\
             {CORS_HEADERS}\r\nx",
            s.cursor(1)
        )
    );
    let (_, r) = s.request(&subscribe_from_origin(
        "/subscribe?room=r&since=zz-1&format=json",
    ));
    assert_eq!(r.header("Parlor-Gap"), None, "nothing was evicted");
    assert_eq!(r.header("Vary"), Some("Origin"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN));
    // A held poll answered by a publish.
    let c = s.connect();
    s.feed(c, subscribe_from_origin("/subscribe?room=r&format=json"));
    s.publish("r", "y");
    let r = s.response(c);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Vary"), Some("Origin"));
    assert_eq!(
        r.header("Access-Control-Expose-Headers"),
        Some("Parlor-Cursor, Parlor-Gap, Parlor-Reset, Retry-After")
    );
    // A preflight.
    let (_, r) = s.request(&format!(
        "OPTIONS /subscribe HTTP/1.1\r\nHost: h\r\nOrigin: {ORIGIN}\r\nAccess-Control-Request-Method: GET\r\n\r\n"
    ));
    assert_eq!(
        String::from_utf8(r.raw).unwrap(),
        format!(
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Allow: GET\r\nAccess-Control-Allow-Origin: {ORIGIN}\r\nAccess-Control-Allow-Methods: GET\r\n\
             Access-Control-Allow-Headers: Content-Type, Last-Event-ID\r\nAccess-Control-Max-Age: 600\r\n\
             Vary: Origin\r\n\r\n"
        )
    );
    // Not for a same-origin or origin-less request, nor for an origin that is not listed.
    let (_, r) = s.request(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nOrigin: http://h\r\nContent-Length: 1\r\n\r\nz",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Vary"), None);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    let (_, r) = s.request(
        "GET /subscribe?room=r&since=0 HTTP/1.1\r\nHost: h\r\nOrigin: https://other.example\r\n\r\n",
    );
    // (An unlisted origin may not subscribe at all: it would hold a slot.)
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Vary"), None);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}
