//! Allocations per request and heap bytes per held poll, counted by a global allocator: the
//! regression tests of issue 15's per-request and per-connection costs. Counts are exact and
//! deterministic (unlike timings): each bound below is the count measured when it was set, with
//! a little room, so a change that adds an allocation to the hot paths fails here.
mod counting;
mod sim;

use counting::{calls, live, Bare};
use parlor_core::{Config, ConnId};
use sim::{get_req, publish_req};

/// Allocation calls per request for `rounds` requests on one keep-alive connection, after
/// `warm` requests made the room, the metrics and the buffers exist.
fn calls_per_request(request: impl Fn(usize) -> Vec<u8>, warm: usize, rounds: usize) -> f64 {
    let mut bare = Bare::new(Config::default());
    let c = bare.accept();
    calls_per_request_on(&mut bare, c, request, warm, rounds)
}

/// [`calls_per_request`] on connection `c` of a server already set up.
fn calls_per_request_on(
    bare: &mut Bare,
    c: ConnId,
    request: impl Fn(usize) -> Vec<u8>,
    warm: usize,
    rounds: usize,
) -> f64 {
    for i in 0..warm {
        bare.feed(c, &request(i));
    }
    let requests: Vec<Vec<u8>> = (warm..warm + rounds).map(&request).collect();
    let before = calls();
    for r in &requests {
        bare.feed(c, r);
    }
    let used = calls() - before;
    assert!(bare.received > 0);
    used as f64 / rounds as f64
}

/// The requests `parlor-load http` sends.
fn load_get() -> Vec<u8> {
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:40000\r\n\r\n".to_vec()
}

fn load_publish(text: &str) -> Vec<u8> {
    format!(
        "POST /publish?room=bench HTTP/1.1\r\nHost: 127.0.0.1:40000\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

#[test]
fn a_keep_alive_get_allocates_nothing() {
    let per = calls_per_request(|_| load_get(), 20, 200);
    eprintln!("GET /: {per} allocation calls per request");
    // The target and `Host` are kept inline in the request; the page is a cached `Bytes`.
    assert!(per <= 0.05, "GET /: {per} allocation calls per request");
}

#[test]
fn a_publish_allocates_little() {
    // Past the history's message cap (1,000 by default), so the history no longer grows.
    let history = Config::default().history_messages;
    let per = calls_per_request(|i| load_publish(&format!("message {i}")), history + 20, 500);
    eprintln!("POST /publish: {per} allocation calls per request");
    // The body (kept as the message), the cursor and body text of the answer, the encoded
    // answer.
    assert!(
        per <= 3.05,
        "POST /publish: {per} allocation calls per request"
    );
}

/// A poll answered at once (a message after its cursor, plain text), on one keep-alive
/// connection. The gap text is written only when there is a gap, so the common case spends no
/// allocation on it.
#[test]
fn a_poll_answered_at_once_allocates_little() {
    let mut bare = Bare::new(Config::default());
    let c = bare.accept();
    let mut cursors = Vec::new();
    for text in ["first", "second"] {
        bare.server
            .handle_data(c, publish_req("r", text).as_bytes(), bare.now)
            .unwrap();
        let sent = bare.drain(true, false);
        let answer = String::from_utf8_lossy(&sent[0].1).into_owned();
        let body = answer.split("\r\n\r\n").nth(1).expect("a body");
        cursors.push(body.trim().to_owned());
    }
    let poll = get_req(&format!("/subscribe?room=r&since={}", cursors[0]));
    let per = calls_per_request_on(&mut bare, c, |_| poll.clone().into_bytes(), 20, 200);
    eprintln!("a poll answered at once: {per} allocation calls per request");
    // Four, measured when this was written (among them the cursor text and the encoded
    // answer); a gap text for a gap of 0 would be a fifth.
    assert!(
        per <= 4.05,
        "a poll answered at once: {per} allocation calls per request"
    );
}

/// Heap bytes a held poll costs the core beside its slot in the connection table (whose size
/// a unit test of `conn` bounds): measured on slots freed by earlier connections, so that no
/// table grows during the measurement.
#[test]
fn a_held_poll_costs_few_heap_bytes_in_the_core_beside_its_slot() {
    let mut bare = Bare::new(Config::default());
    let request = get_req("/subscribe?room=r");
    // The room exists and the tables have grown: 4,000 held polls, then every other one closes.
    let warm: Vec<ConnId> = (0..4_000).map(|_| bare.accept()).collect();
    for &c in &warm {
        bare.feed(c, request.as_bytes());
    }
    for &c in warm.iter().step_by(2) {
        bare.server.handle_closed(c, bare.now).unwrap();
        while bare.server.poll_output().is_some() {}
    }
    let n = 1_000;
    let before = live();
    for _ in 0..n {
        let c = bare.accept();
        bare.feed(c, request.as_bytes());
    }
    let per = (live() - before) as f64 / n as f64;
    eprintln!("held poll: {per} live heap bytes in the core beside its slot");
    // No buffer is kept: what is left is the held poll's share of the timer set's nodes.
    assert!(
        per <= 40.0,
        "held poll: {per} live heap bytes beside its slot"
    );
}
