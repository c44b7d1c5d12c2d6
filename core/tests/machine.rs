//! Scenarios for the chat state machine, driven through the simulation harness.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use parlor_core::{Config, Output};
use sim::{get_req, publish_req, Sim};

fn short() -> Config {
    Config {
        poll_timeout: Duration::from_secs(25),
        ..Config::default()
    }
}

// --- routing --------------------------------------------------------------------------------

#[test]
fn page_and_assets_are_served_with_csp() {
    let mut s = Sim::default();
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("Content-Security-Policy")
        .unwrap()
        .starts_with("default-src 'self'"));
    assert!(page.text().contains("/chat.js"));
    assert_eq!(
        s.get("/chat.js").header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        s.get("/chat.css").header("Content-Type"),
        Some("text/css; charset=utf-8")
    );
    for r in [s.get("/"), s.get("/chat.js"), s.get("/healthz")] {
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    }
}

#[test]
fn head_gets_the_headers_without_the_body() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        "HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    let raw = s.received(c);
    let full = s.get("/");
    let head_len = full.raw.len() - full.body.len();
    assert_eq!(&raw[..head_len], &full.raw[..head_len]);
    assert!(
        raw[head_len..].starts_with(b"HTTP/1.1 200 OK\r\n"),
        "next response follows at once"
    );
}

#[test]
fn healthz_and_404_and_405() {
    let mut s = Sim::default();
    let ok = s.get("/healthz");
    assert_eq!((ok.status, ok.text()), (200, "ok\n"));
    let nf = s.get("/nope");
    assert_eq!(
        nf.raw,
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
          Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\nnot found\n"
    );
    let (_, r) = s.request("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
    let r = s.get("/publish");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));
    let (_, r) = s.request("DELETE /subscribe HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
}

#[test]
fn metrics_count_what_happened() {
    let mut s = Sim::default();
    let sub = s.connect();
    s.feed(sub, get_req("/subscribe?room=m"));
    s.publish("m", "hello");
    s.get("/nope");
    let m = s.get("/metrics");
    assert_eq!(
        m.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.text();
    for line in [
        "parlor_messages_published_total 1",
        "parlor_messages_delivered_total 1",
        "parlor_rooms 1",
        "parlor_held_polls 0",
        "parlor_requests_rejected_total{status=\"404\"} 1",
        "# TYPE parlor_connections gauge",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("parlor_bytes_sent_total "));
}

// --- publish and subscribe ------------------------------------------------------------------

#[test]
fn classic_cursorless_poll_waits_for_the_next_message() {
    let mut s = Sim::default();
    s.publish("main", "old");
    let sub = s.connect();
    s.feed(sub, get_req("/subscribe"));
    assert!(
        s.received(sub).is_empty(),
        "held, not answered with history"
    );
    assert_eq!(s.server.held_count(), 1);
    let p = s.publish("main", "hello");
    assert_eq!(p.status, 200);
    assert_eq!(p.header("Parlor-Cursor"), Some(s.cursor(2).as_str()));
    assert_eq!(p.text(), format!("{}\n", s.cursor(2)));
    let r = s.response(sub);
    assert_eq!(
        r.raw,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nParlor-Cursor: {}\r\n\r\nhello",
            s.cursor(2)
        )
        .into_bytes()
    );
    // The client loops on the same connection.
    s.feed(sub, get_req("/subscribe"));
    s.publish("main", "again");
    assert_eq!(s.response(sub).text(), "again");
}

#[test]
fn since_answers_at_once_with_the_oldest_newer_message() {
    let mut s = Sim::default();
    for m in ["a", "b", "c"] {
        s.publish("r", m);
    }
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)));
    assert_eq!(
        (r.text(), r.header("Parlor-Cursor")),
        ("b", Some(s.cursor(2).as_str()))
    );
    assert_eq!(r.header("Parlor-Gap"), None);
    let r = s.get("/subscribe?room=r&since=0");
    assert_eq!(r.text(), "a");
    // Last-Event-ID works as since.
    let (_, r) = s.request(&format!(
        "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {}\r\n\r\n",
        s.cursor(2)
    ));
    assert_eq!(r.text(), "c");
}

#[test]
fn since_at_the_newest_message_waits() {
    let mut s = Sim::default();
    s.publish("r", "a");
    let sub = s.connect();
    s.feed(
        sub,
        get_req(&format!("/subscribe?room=r&since={}", s.cursor(1))),
    );
    assert!(s.received(sub).is_empty());
    s.publish("r", "b");
    assert_eq!(s.response(sub).text(), "b");
}

#[test]
fn json_batch_holds_all_messages_after_the_cursor() {
    let mut s = Sim::default();
    s.publish("r", "one");
    s.publish("r", "two \"quoted\" <b>");
    let r = s.get("/subscribe?room=r&since=0&format=json");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let e = s.epoch();
    let t = sim::EPOCH_MS;
    assert_eq!(
        r.text(),
        format!(
            "{{\"room\":\"r\",\"messages\":[{{\"cursor\":\"{e}-1\",\"time\":{t},\"text\":\"one\"}},\
             {{\"cursor\":\"{e}-2\",\"time\":{t},\"text\":\"two \\\"quoted\\\" \\u003cb>\"}}],\
             \"next\":\"{e}-2\",\"gap\":0}}"
        )
    );
    assert_eq!(r.header("Parlor-Cursor"), Some(s.cursor(2).as_str()));
    // Accept: application/json asks for the same.
    let (_, r2) = s.request(
        "GET /subscribe?room=r&since=0 HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\n\r\n",
    );
    assert_eq!(r2.body, r.body);
}

#[test]
fn json_batch_is_capped() {
    let mut s = Sim::new(Config {
        batch_messages: 2,
        ..Config::default()
    });
    for i in 0..5 {
        s.publish("r", &format!("m{i}"));
    }
    let r = s.get("/subscribe?room=r&since=0&format=json");
    assert!(
        r.text().contains("\"next\":\"")
            && r.text()
                .ends_with(&format!("\"next\":\"{}\",\"gap\":0}}", s.cursor(2)))
    );
}

#[test]
fn message_time_follows_the_virtual_clock() {
    let mut s = Sim::default();
    s.advance(Duration::from_millis(1500));
    s.publish("r", "x");
    let r = s.get("/subscribe?room=r&since=0&format=json");
    assert!(r
        .text()
        .contains(&format!("\"time\":{}", sim::EPOCH_MS + 1500)));
}

#[test]
fn falling_out_of_the_history_is_signalled_as_a_gap() {
    let mut s = Sim::new(Config {
        history_messages: 3,
        ..Config::default()
    });
    for i in 1..=6 {
        s.publish("r", &format!("m{i}"));
    }
    // Holding cursor 1: messages 2 and 3 are gone, 4 is the oldest retained.
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)));
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m4", Some("2")));
    let r = s.get(&format!(
        "/subscribe?room=r&since={}&format=json",
        s.cursor(1)
    ));
    assert!(r
        .text()
        .ends_with(&format!("\"next\":\"{}\",\"gap\":2}}", s.cursor(6))));
    assert_eq!(r.header("Parlor-Gap"), Some("2"));
    // since=0 asks for what is retained: no gap.
    assert_eq!(
        s.get("/subscribe?room=r&since=0").header("Parlor-Gap"),
        None
    );
}

#[test]
fn a_cursor_from_another_epoch_starts_from_the_oldest_retained() {
    let mut s = Sim::new(Config {
        history_messages: 2,
        ..Config::default()
    });
    for i in 1..=3 {
        s.publish("r", &format!("m{i}"));
    }
    let r = s.get("/subscribe?room=r&since=zzzz-40");
    assert_eq!((r.text(), r.header("Parlor-Gap")), ("m2", Some("1")));
}

#[test]
fn bad_cursors_and_rooms_are_400() {
    let mut s = Sim::default();
    for target in [
        "/subscribe?since=nope",
        "/subscribe?since=ABC-1",
        &format!("/subscribe?since={}", s.cursor(5)),
        "/subscribe?room=a%20b",
        "/subscribe?room=",
        &format!("/subscribe?room={}", "x".repeat(65)),
        "/subscribe?room=%zz",
    ] {
        let r = s.get(target);
        assert_eq!(r.status, 400, "{target}");
        assert!(!r.body.is_empty() && r.body.ends_with(b"\n"));
    }
    let r = s.request(&publish_req("bad!room", "x")).1;
    assert_eq!((r.status, r.text()), (400, "invalid room name\n"));
}

#[test]
fn held_poll_times_out_with_204_and_the_unchanged_cursor() {
    let mut s = Sim::new(short());
    s.publish("r", "a");
    let sub = s.connect();
    s.feed(
        sub,
        get_req(&format!("/subscribe?room=r&since={}", s.cursor(1))),
    );
    s.advance(Duration::from_secs(24));
    assert!(s.received(sub).is_empty());
    s.advance(Duration::from_secs(1));
    let r = s.response(sub);
    assert_eq!(
        r.raw,
        format!(
            "HTTP/1.1 204 No Content\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             Parlor-Cursor: {}\r\n\r\n",
            s.cursor(1)
        )
        .into_bytes()
    );
    assert!(!s.is_closed(sub));
    assert_eq!(s.server.held_count(), 0);
}

#[test]
fn one_publish_shares_one_buffer_across_all_waiters() {
    let mut s = Sim::default();
    let subs: Vec<_> = (0..50).map(|_| s.connect()).collect();
    for (i, &c) in subs.iter().enumerate() {
        let json = if i % 2 == 0 { "&format=json" } else { "" };
        s.feed(c, get_req(&format!("/subscribe?room=r{json}")));
    }
    s.log.clear();
    s.publish("r", "fan");
    let mut ptrs = std::collections::HashSet::new();
    let mut sends = 0;
    for out in &s.log {
        if let Output::Send { conn, data } = out {
            if subs.contains(conn) {
                sends += 1;
                ptrs.insert(data.as_ptr());
            }
        }
    }
    assert_eq!(sends, 50);
    assert_eq!(
        ptrs.len(),
        2,
        "one encoding per representation, cloned to each waiter"
    );
    for &c in &subs {
        assert_eq!(s.response(c).status, 200);
    }
}

#[test]
fn publishes_go_only_to_their_room() {
    let mut s = Sim::default();
    let a = s.connect();
    let b = s.connect();
    s.feed(a, get_req("/subscribe?room=a"));
    s.feed(b, get_req("/subscribe?room=b"));
    s.publish("a", "for a");
    assert_eq!(s.response(a).text(), "for a");
    assert!(s.received(b).is_empty());
}

#[test]
fn a_closed_subscriber_frees_its_slot_at_once() {
    let mut s = Sim::default();
    let a = s.connect();
    let b = s.connect();
    let publisher = s.connect();
    s.feed(a, get_req("/subscribe"));
    s.feed(b, get_req("/subscribe"));
    s.vanish(a);
    assert_eq!(s.server.held_count(), 1);
    s.log.clear();
    s.feed(publisher, publish_req("main", "x"));
    assert_eq!(s.response(publisher).status, 200);
    assert_eq!(s.response(b).text(), "x");
    // No output for the dead waiter (the harness also asserts this on every output).
    assert!(s
        .log
        .iter()
        .all(|o| !matches!(o, Output::Send { conn, .. } if *conn == a)));
}

#[test]
fn eof_drops_a_held_poll_and_closes() {
    let mut s = Sim::default();
    let a = s.connect();
    s.feed(a, get_req("/subscribe"));
    s.eof(a);
    assert!(s.is_closed(a));
    assert_eq!(s.server.held_count(), 0);
}

#[test]
fn eof_after_a_complete_request_still_answers_it() {
    let mut s = Sim::default();
    let a = s.connect();
    s.feed(a, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    s.eof(a);
    assert_eq!(s.response(a).status, 200);
    assert!(s.is_closed(a));
}

// --- publish formats and errors --------------------------------------------------------------

#[test]
fn publish_as_form_and_json() {
    let mut s = Sim::default();
    let body = "message=hi+there%21";
    let (_, r) = s.request(&format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(r.status, 200);
    let body = r#"{"message":"json \u00e9"}"#;
    let (_, r) = s.request(&format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.text(), format!("{{\"cursor\":\"{}\"}}", s.cursor(2)));
    assert_eq!(s.get("/subscribe?room=r&since=0").text(), "hi there!");
    assert_eq!(
        s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)))
            .text(),
        "json é"
    );
}

fn json_publish(id: &str, text: &str) -> String {
    let body = format!(r#"{{"message":"{text}","id":"{id}"}}"#);
    format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_repeated_id_returns_the_original_cursor() {
    let mut s = Sim::default();
    let sub = s.connect();
    s.feed(sub, get_req("/subscribe?room=r"));
    let first = s.request(&json_publish("k1", "once")).1;
    let again = s.request(&json_publish("k1", "once")).1;
    assert_eq!(first.header("Parlor-Cursor"), again.header("Parlor-Cursor"));
    assert_eq!(s.response(sub).text(), "once");
    s.feed(
        sub,
        get_req(&format!("/subscribe?room=r&since={}", s.cursor(1))),
    );
    assert!(s.received(sub).is_empty(), "nothing was published twice");
    let other = s.request(&json_publish("k2", "twice")).1;
    assert_eq!(other.header("Parlor-Cursor"), Some(s.cursor(2).as_str()));
}

#[test]
fn publish_errors_have_their_status_and_reason() {
    let mut s = Sim::new(Config {
        max_message_bytes: 10,
        ..Config::default()
    });
    let cases: &[(&str, &[u8], u16, &str)] = &[
        ("text/plain", b"", 400, "empty message\n"),
        ("text/plain", b"   ", 400, "empty message\n"),
        (
            "text/plain",
            b"\xff\xfe",
            400,
            "message is not valid UTF-8\n",
        ),
        ("text/plain", b"01234567890", 413, "message too large\n"),
        ("image/png", b"x", 415, "unsupported content type\n"),
        (
            "application/json",
            b"{\"message\": 3}",
            400,
            "message must be a string\n",
        ),
        ("application/json", b"not json", 400, "invalid JSON body\n"),
        (
            "application/x-www-form-urlencoded",
            b"id=1",
            400,
            "missing message field\n",
        ),
    ];
    for &(ct, body, status, reason) in cases {
        let c = s.connect();
        let mut req = format!(
            "POST /publish HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        s.feed(c, req);
        let r = s.response(c);
        assert_eq!((r.status, r.text()), (status, reason), "{ct} {body:?}");
        assert!(!s.is_closed(c), "the connection survives a refused publish");
    }
    // Nothing was published: a poll for everything retained is held.
    let c = s.connect();
    s.feed(c, get_req("/subscribe?since=0"));
    assert!(s.received(c).is_empty());
}

#[test]
fn cross_origin_publish_is_403_unless_allowed() {
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        ..Config::default()
    });
    let req = |origin: &str| {
        format!("POST /publish HTTP/1.1\r\nHost: h:8080\r\nOrigin: {origin}\r\nContent-Length: 1\r\n\r\nx")
    };
    assert_eq!(s.request(&req("http://evil.example")).1.status, 403);
    assert_eq!(s.request(&req("null")).1.status, 403);
    assert_eq!(s.request(&req("http://h:8080")).1.status, 200);
    assert_eq!(s.request(&req("https://ok.example")).1.status, 200);
}

#[test]
fn publish_rate_is_limited_per_address_with_retry_after() {
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 2,
        ..Config::default()
    });
    let pub_from = |s: &mut Sim, ip: [u8; 4]| {
        let c = s.connect_from(IpAddr::V4(Ipv4Addr::from(ip)));
        s.feed(c, publish_req("r", "x"));
        s.response(c)
    };
    assert_eq!(pub_from(&mut s, [127, 0, 0, 2]).status, 200);
    assert_eq!(pub_from(&mut s, [127, 0, 0, 2]).status, 200);
    let r = pub_from(&mut s, [127, 0, 0, 2]);
    assert_eq!((r.status, r.header("Retry-After")), (429, Some("1")));
    assert_eq!(
        pub_from(&mut s, [127, 0, 0, 3]).status,
        200,
        "another address has its own budget"
    );
    s.advance(Duration::from_secs(1));
    assert_eq!(pub_from(&mut s, [127, 0, 0, 2]).status, 200);
}

#[test]
fn rooms_are_capped() {
    let mut s = Sim::new(Config {
        max_rooms: 2,
        ..Config::default()
    });
    // Rooms in use (a poll held in each) are never evicted: a third room gets 503.
    let a = s.connect();
    s.feed(a, get_req("/subscribe?room=a"));
    let b = s.connect();
    s.feed(b, get_req("/subscribe?room=b"));
    let r = s.publish("c", "x");
    assert_eq!((r.status, r.text()), (503, "too many rooms\n"));
    assert_eq!(s.publish("a", "y").status, 200);
}

// --- connections ------------------------------------------------------------------------------

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        format!(
            "{}{}{}",
            get_req("/healthz"),
            publish_req("p", "x"),
            get_req("/nope")
        ),
    );
    let rs = s.responses(c);
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 404]
    );
    assert!(!s.is_closed(c));
}

#[test]
fn requests_behind_a_held_poll_wait_for_it() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        format!("{}{}", get_req("/subscribe?room=q"), get_req("/healthz")),
    );
    assert!(
        s.received(c).is_empty(),
        "the health check waits behind the poll"
    );
    s.publish("q", "m");
    let rs = s.responses(c);
    assert_eq!(rs.len(), 2);
    assert_eq!((rs[0].text(), rs[1].text()), ("m", "ok\n"));
}

#[test]
fn pipelined_bytes_over_the_cap_pause_reading() {
    let mut s = Sim::new(Config {
        max_pipeline_bytes: 100,
        ..Config::default()
    });
    let c = s.connect();
    s.feed(c, get_req("/subscribe"));
    s.feed(c, get_req("/healthz").repeat(3));
    assert!(s.peers[&c].paused);
    s.publish("main", "m");
    assert!(!s.peers[&c].paused);
    assert_eq!(s.responses(c).len(), 4);
}

#[test]
fn http10_closes_unless_keep_alive() {
    let mut s = Sim::default();
    let (c, r) = s.request("GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(s.is_closed(c));
    let (c, r) = s.request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    assert!(!s.is_closed(c));
    let (c, r) = s.request("GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(s.is_closed(c));
}

#[test]
fn codec_errors_answer_and_close() {
    let mut s = Sim::default();
    for (raw, status) in [
        ("GARBAGE\r\n\r\n", 400),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (
            "POST /publish HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (
            "POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
    ] {
        let (c, r) = s.request(raw);
        assert_eq!(r.status, status, "{raw:?}");
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(s.is_closed(c));
    }
}

#[test]
fn expect_continue_gets_an_interim_response() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(
        c,
        "POST /publish HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    assert_eq!(s.received(c), b"HTTP/1.1 100 Continue\r\n\r\n");
    s.feed(c, "hi");
    assert_eq!(s.response(c).status, 200);
}

#[test]
fn slowloris_gets_408_and_close() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, "GET / HTTP/1.1\r\n");
    for _ in 0..9 {
        s.advance(Duration::from_secs(1));
        s.feed(c, "X: y\r\n");
    }
    s.advance(Duration::from_secs(1));
    let r = s.response(c);
    assert_eq!(
        (r.status, r.text()),
        (408, "request not received in time\n")
    );
    assert!(s.is_closed(c));
}

#[test]
fn a_silent_connection_is_closed_without_an_answer() {
    let mut s = Sim::default();
    let c = s.connect();
    s.advance(Duration::from_secs(10));
    assert!(s.is_closed(c));
    assert!(s.received(c).is_empty());
}

#[test]
fn idle_keep_alive_is_closed_and_requests_restart_the_clock() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, get_req("/healthz"));
    s.advance(Duration::from_secs(59));
    s.feed(c, get_req("/healthz"));
    s.advance(Duration::from_secs(59));
    assert!(!s.is_closed(c));
    s.advance(Duration::from_secs(1));
    assert!(s.is_closed(c));
    assert_eq!(s.responses(c).len(), 2);
}

#[test]
fn a_client_that_does_not_read_is_cut_off() {
    let mut s = Sim::new(Config {
        max_unsent_bytes: 10_000,
        max_message_bytes: 1_000,
        ..Config::default()
    });
    let slow = s.connect();
    let fine = s.connect();
    s.stall(slow);
    s.feed(slow, get_req("/").repeat(50));
    assert!(s.is_closed(slow) && s.peers[&slow].aborted);
    s.feed(fine, get_req("/"));
    assert_eq!(s.response(fine).status, 200);
    assert!(!s.is_closed(fine));
}

#[test]
fn connection_cap_refuses_with_503() {
    let mut s = Sim::new(Config {
        max_connections: 2,
        ..Config::default()
    });
    let _a = s.connect();
    let _b = s.connect();
    let c = s.connect();
    let r = s.response(c);
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("2")));
    assert!(s.is_closed(c));
}

#[test]
fn per_address_cap() {
    let mut s = Sim::new(Config {
        max_connections_per_ip: 1,
        ..Config::default()
    });
    let ip = |n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
    let a = s.connect_from(ip(2));
    let b = s.connect_from(ip(2));
    assert_eq!(s.response(b).status, 503);
    let _c = s.connect_from(ip(3));
    s.vanish(a);
    let d = s.connect_from(ip(2));
    assert!(!s.is_closed(d), "a freed place can be taken again");
}

#[test]
fn shutdown_answers_held_polls_and_refuses_new_work() {
    let mut s = Sim::default();
    let held = s.connect();
    let idle = s.connect();
    s.feed(held, get_req("/subscribe"));
    s.feed(idle, get_req("/healthz"));
    s.received(idle);
    s.server.handle_shutdown(s.now);
    s.drain();
    let r = s.response(held);
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("2")));
    assert!(s.is_closed(held) && s.is_closed(idle));
    let late = s.connect();
    assert_eq!(s.response(late).status, 503);
    assert_eq!(s.server.connection_count(), 0);
}

#[test]
fn a_stale_id_is_an_error_not_a_panic() {
    let mut s = Sim::default();
    let c = s.connect();
    s.vanish(c);
    assert!(s
        .server
        .handle_data(c, b"GET / HTTP/1.1\r\n\r\n", s.now)
        .is_err());
    assert!(s.server.handle_closed(c, s.now).is_err());
    assert!(s.server.handle_flushed(c, 1, s.now).is_err());
    assert!(s.server.handle_eof(c, s.now).is_err());
}

#[test]
fn handle_timeout_early_or_twice_is_harmless() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, get_req("/subscribe"));
    let now = s.now;
    s.server.handle_timeout(now);
    s.server.handle_timeout(now);
    s.drain();
    assert!(s.received(c).is_empty());
    assert!(s.next_deadline());
    assert_eq!(s.response(c).status, 204);
}

#[test]
fn a_closing_connection_that_never_finishes_is_aborted() {
    let mut s = Sim::default();
    let c = s.connect();
    // Take the server's Close without reporting it done, like a stuck adapter write.
    s.server
        .handle_data(c, b"GET / HTTP/1.0\r\n\r\n", s.now)
        .unwrap();
    let mut closes = 0;
    while let Some(o) = s.server.poll_output() {
        closes += usize::from(matches!(o, Output::Close { .. }));
    }
    assert_eq!(closes, 1);
    s.now += Duration::from_secs(11);
    s.server.handle_timeout(s.now);
    assert_eq!(s.server.poll_output(), Some(Output::Abort { conn: c }));
    s.server.handle_closed(c, s.now).unwrap();
}

#[test]
fn allow_listed_origins_get_cors_headers_and_preflights() {
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        ..Config::default()
    });
    let pre = |origin: &str| {
        format!("OPTIONS /publish HTTP/1.1\r\nHost: h\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\r\n")
    };
    let (_, r) = s.request(&pre("https://ok.example"));
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("POST"));
    assert_eq!(s.request(&pre("https://evil.example")).1.status, 403);
    let (_, r) = s.request("OPTIONS /subscribe HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.header("Allow")), (204, Some("GET")));

    // A held poll from the allowed origin gets the headers, a same-origin one does not, and
    // the two answers are two encodings.
    let cross = s.connect();
    let same = s.connect();
    s.feed(
        cross,
        "GET /subscribe HTTP/1.1\r\nHost: h\r\nOrigin: https://ok.example\r\n\r\n",
    );
    s.feed(same, get_req("/subscribe"));
    let body = "x";
    let (_, p) = s.request(&format!(
        "POST /publish HTTP/1.1\r\nHost: h\r\nOrigin: https://ok.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(
        p.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
    let c = s.response(cross);
    assert_eq!(
        c.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
    assert_eq!(
        c.header("Access-Control-Expose-Headers"),
        Some("Parlor-Cursor, Parlor-Gap, Parlor-Reset, Retry-After")
    );
    assert_eq!(s.response(same).header("Access-Control-Allow-Origin"), None);
}
