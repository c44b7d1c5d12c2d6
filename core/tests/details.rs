//! HTTP details (issue 20) on paths an integration test cannot time: the `503` of a request
//! completed during shutdown and the `408` of a request cut short answer a `HEAD` with headers
//! only, and a held poll answered `503` at shutdown keeps its CORS headers.

mod sim;

use std::time::Duration;

use parlor_core::Config;
use sim::Sim;

#[test]
fn a_head_completed_during_shutdown_gets_a_503_without_a_body() {
    let mut s = Sim::default();
    let c = s.connect();
    // The head is complete, its body still on the way: answered (issue 12; a head only begun
    // at shutdown is closed without an answer, see core/tests/hostile.rs).
    s.feed(
        c,
        "HEAD /healthz HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab",
    );
    s.server.handle_shutdown(s.now);
    s.drain();
    let raw = s.received(c);
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(text.contains("Content-Length: 24\r\n"), "{text}");
    assert!(text.contains("Retry-After: 2\r\n"), "{text}");
    assert!(
        text.ends_with("Connection: close\r\n\r\n"),
        "no body: {text:?}"
    );
    assert!(s.is_closed(c));
}

#[test]
fn a_head_cut_short_gets_a_408_without_a_body() {
    let mut s = Sim::default();
    let head = s.connect();
    s.feed(head, "HEAD / HTTP/1.1\r\nHost: h\r\n");
    let get = s.connect();
    s.feed(get, "GET / HTTP/1.1\r\nHost: h\r\n");
    s.advance(Duration::from_secs(3600));
    let head = String::from_utf8(s.received(head)).unwrap();
    let get = String::from_utf8(s.received(get)).unwrap();
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert_eq!(format!("{head}request not received in time\n"), get);
}

#[test]
fn a_held_poll_answered_503_at_shutdown_keeps_its_cors_headers() {
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        ..Config::default()
    });
    let c = s.connect();
    s.feed(
        c,
        "GET /subscribe?room=a HTTP/1.1\r\nHost: h\r\nOrigin: https://ok.example\r\n\r\n",
    );
    s.server.handle_shutdown(s.now);
    s.drain();
    let r = s.response(c);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("2"));
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
    assert_eq!(r.text(), "server is shutting down\n");
}
