//! Server-Sent Events (`GET /events`) through the simulation harness: the stream's exact bytes,
//! resuming, gaps and resets, heartbeats and maximum age on the virtual clock, slow readers,
//! shutdown, and a property over any interleaving of publishes, disconnects and resumes.

mod sim;

use std::time::Duration;

use parlor_core::{Config, ConnId, Output};
use proptest::prelude::*;
use sim::Sim;

/// One event as an `EventSource` dispatches it (or a comment, with `kind` `:`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    kind: String,
    id: Option<String>,
    data: String,
    retry: Option<u64>,
}

/// A stream's head and its body so far, de-chunked; panics on a malformed stream.
struct Stream {
    head: String,
    body: Vec<u8>,
    /// The terminating chunk arrived.
    ended: bool,
}

fn parse_stream(raw: &[u8]) -> Stream {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let chunked = head.contains("\r\nTransfer-Encoding: chunked\r\n");
    let mut rest = &raw[end..];
    if !chunked {
        return Stream {
            head,
            body: rest.to_vec(),
            ended: false,
        };
    }
    let mut body = Vec::new();
    let mut ended = false;
    while !rest.is_empty() {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line]).unwrap(), 16).unwrap();
        rest = &rest[line + 2..];
        if size == 0 {
            assert_eq!(rest, b"\r\n", "nothing after the last chunk");
            ended = true;
            break;
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
    Stream { head, body, ended }
}

/// Parses complete events as the HTML event-stream parser does (LF, CR or CRLF end a line).
fn events(body: &[u8]) -> Vec<Event> {
    let text = std::str::from_utf8(body).unwrap();
    let mut out = Vec::new();
    let mut ev = Event {
        kind: String::new(),
        id: None,
        data: String::new(),
        retry: None,
    };
    let mut has_data = false;
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break; // an incomplete line: not dispatched yet
        };
        if line.is_empty() {
            if has_data || ev.retry.is_some() || ev.id.is_some() {
                if ev.kind.is_empty() {
                    ev.kind = "message".into();
                }
                out.push(ev.clone());
            }
            ev = Event {
                kind: String::new(),
                id: None,
                data: String::new(),
                retry: None,
            };
            has_data = false;
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Event {
                kind: ":".into(),
                id: None,
                data: comment.trim_start().into(),
                retry: None,
            });
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => ev.kind = value.into(),
            "id" => ev.id = Some(value.into()),
            "retry" => ev.retry = Some(value.parse().unwrap()),
            "data" => {
                if has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
                has_data = true;
            }
            other => panic!("unknown field {other:?}"),
        }
    }
    out
}

/// The events `id` received so far (taking them).
fn received_events(s: &mut Sim, id: ConnId) -> Vec<Event> {
    let raw = s.peers[&id].received.clone();
    events(&parse_stream(&raw).body)
}

/// The message events only, as `(id, data)`.
fn messages(evs: &[Event]) -> Vec<(String, String)> {
    evs.iter()
        .filter(|e| e.kind == "message")
        .map(|e| (e.id.clone().unwrap(), e.data.clone()))
        .collect()
}

fn open(s: &mut Sim, target: &str, extra: &str) -> ConnId {
    let c = s.connect();
    s.feed(
        c,
        format!("GET {target} HTTP/1.1\r\nHost: h\r\n{extra}\r\n"),
    );
    c
}

fn config() -> Config {
    Config {
        sse_heartbeat: Duration::from_secs(15),
        ..Config::default()
    }
}

fn metric(s: &mut Sim, name: &str) -> u64 {
    let m = s.get("/metrics");
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn stream_bytes_exactly() {
    let mut s = Sim::new(config());
    let e = s.epoch();
    let c = open(&mut s, "/events?room=r", "");
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
                X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n";
    let ready = format!("retry: 3000\nid: {e}-0\nevent: ready\ndata: {e}-0\n\n");
    let expected = format!("{head}{:x}\r\n{ready}\r\n", ready.len());
    assert_eq!(String::from_utf8(s.received(c)).unwrap(), expected);

    s.publish("r", "hello\nworld");
    let event = format!("id: {e}-1\ndata: hello\ndata: world\n\n");
    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
    assert_eq!(String::from_utf8(s.received(c)).unwrap(), chunk);
    // The stream stays: a second message arrives on it too.
    s.publish("r", "again");
    let event = format!("id: {e}-2\ndata: again\n\n");
    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
    assert_eq!(String::from_utf8(s.received(c)).unwrap(), chunk);
    assert!(!s.is_closed(c));
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 1);
    assert_eq!(metric(&mut s, "parlor_sse_events_sent_total"), 2);
}

#[test]
fn json_events_and_http10_close_delimited() {
    let mut s = Sim::new(config());
    let e = s.epoch();
    s.publish("r", "a\"b");
    let c = s.connect();
    s.feed(
        c,
        "GET /events?room=r&since=0&format=json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    let raw = String::from_utf8(s.received(c)).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.ends_with("X-Accel-Buffering: no\r\nConnection: close"),
        "{head}"
    );
    assert!(!head.contains("Transfer-Encoding"));
    let first = s.server.epoch().to_string();
    assert_eq!(
        body,
        format!(
            "retry: 3000\nevent: ready\ndata: {e}-1\n\n\
             id: {e}-1\ndata: {{\"cursor\":\"{first}-1\",\"time\":{},\"text\":\"a\\\"b\"}}\n\n",
            sim::EPOCH_MS
        )
    );
    // Shutdown ends a close-delimited stream by closing it.
    s.server.handle_shutdown(s.now);
    s.drain();
    assert!(s.is_closed(c) && !s.peers[&c].aborted);
    assert!(s.received(c).is_empty());
}

#[test]
fn resume_by_since_and_by_last_event_id() {
    let mut s = Sim::new(config());
    for i in 1..=4 {
        s.publish("r", &format!("m{i}"));
    }
    let target = format!("/events?room=r&since={}", s.cursor(2));
    let c = open(&mut s, &target, "");
    let evs = received_events(&mut s, c);
    assert_eq!(evs[0].kind, "ready");
    assert_eq!(evs[0].retry, Some(3000));
    assert_eq!(evs[0].id, None, "ready carries no id when messages follow");
    assert_eq!(evs[0].data, s.cursor(4));
    assert_eq!(
        messages(&evs),
        [(s.cursor(3), "m3".into()), (s.cursor(4), "m4".into())]
    );
    // Last-Event-ID wins over the since the URL was opened with (EventSource reconnecting).
    let target = format!("/events?room=r&since={}", s.cursor(1));
    let header = format!("Last-Event-ID: {}\r\n", s.cursor(3));
    let c = open(&mut s, &target, &header);
    let evs = received_events(&mut s, c);
    assert_eq!(messages(&evs), [(s.cursor(4), "m4".into())]);
    // An empty Last-Event-ID is no cursor: the URL's since holds.
    let target = format!("/events?room=r&since={}", s.cursor(2));
    let c = open(&mut s, &target, "Last-Event-ID: \r\n");
    let evs = received_events(&mut s, c);
    assert_eq!(
        messages(&evs),
        [(s.cursor(3), "m3".into()), (s.cursor(4), "m4".into())]
    );
    // since=0 replays everything retained; no cursor starts from now.
    let c = open(&mut s, "/events?room=r&since=0", "");
    assert_eq!(messages(&received_events(&mut s, c)).len(), 4);
    let c = open(&mut s, "/events?room=r", "");
    let evs = received_events(&mut s, c);
    assert_eq!(messages(&evs).len(), 0);
    assert_eq!(
        evs[0].id,
        Some(s.cursor(4)),
        "nothing follows: resume from here"
    );
    // Live messages follow the replay with no hole and no duplicate.
    s.publish("r", "m5");
    let evs = received_events(&mut s, c);
    assert_eq!(messages(&evs), [(s.cursor(5), "m5".into())]);
}

#[test]
fn gap_and_reset_before_the_replay() {
    let mut s = Sim::new(Config {
        history_messages: 3,
        ..config()
    });
    for i in 1..=6 {
        s.publish("r", &format!("m{i}"));
    }
    let target = format!("/events?room=r&since={}", s.cursor(1));
    let c = open(&mut s, &target, "");
    let evs = received_events(&mut s, c);
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["ready", "gap", "message", "message", "message"]);
    assert_eq!(evs[1].data, "2", "messages 2 and 3 were evicted");
    assert_eq!(evs[2].id, Some(s.cursor(4)));
    // A cursor of another epoch: reset, then the gap known in this epoch, then the replay.
    let c = open(&mut s, "/events?room=r", "Last-Event-ID: zzzz-9\r\n");
    let evs = received_events(&mut s, c);
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["ready", "reset", "gap", "message", "message", "message"]
    );
    assert_eq!(evs[1].data, "");
    assert_eq!(evs[2].data, "3");
    // A current cursor never carries it.
    let target = format!("/events?room=r&since={}", s.cursor(5));
    let c = open(&mut s, &target, "");
    let evs = received_events(&mut s, c);
    assert!(evs.iter().all(|e| e.kind != "reset" && e.kind != "gap"));
}

#[test]
fn bad_requests_get_the_same_answers_as_the_other_routes() {
    let mut s = Sim::new(config());
    let r = s.get("/events?room=a%20b");
    assert_eq!((r.status, r.text()), (400, "invalid room name\n"));
    let r = s.get("/events?since=nope");
    assert_eq!((r.status, r.text()), (400, "invalid cursor\n"));
    let r = s.get(&format!("/events?since={}", s.cursor(9)));
    assert_eq!((r.status, r.text()), (400, "cursor is ahead of the room\n"));
    // HEAD is not allowed (as on /subscribe); its answer has no body.
    let c = s.connect();
    s.feed(c, "HEAD /events HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = String::from_utf8(s.received(c)).unwrap();
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(head.ends_with("\r\nAllow: GET\r\n\r\n"), "{head}");
    let (_, r) = s.request("POST /events HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 0);
}

#[test]
fn heartbeat_after_silence_on_the_virtual_clock() {
    let mut s = Sim::new(config());
    let c = open(&mut s, "/events?room=r", "");
    s.received(c);
    s.advance(Duration::from_millis(14_999));
    assert!(s.received(c).is_empty());
    s.advance(Duration::from_millis(1));
    assert_eq!(s.received(c), b"d\r\n: keepalive\n\n\r\n");
    // A message resets the silence: the next heartbeat is 15 s after it.
    s.advance(Duration::from_secs(5));
    s.publish("r", "x");
    s.received(c);
    s.advance(Duration::from_secs(14));
    assert!(s.received(c).is_empty());
    s.advance(Duration::from_secs(1));
    assert_eq!(s.received(c), b"d\r\n: keepalive\n\n\r\n");
    // The heartbeat bytes are one shared constant.
    let beats: Vec<*const u8> = s
        .log
        .iter()
        .filter_map(|o| match o {
            Output::Send { data, .. } if data.ends_with(b": keepalive\n\n\r\n") => {
                Some(data.as_ptr())
            }
            _ => None,
        })
        .collect();
    assert_eq!(beats.len(), 2);
    assert_eq!(beats[0], beats[1]);
    assert!(!s.is_closed(c));
}

#[test]
fn max_age_ends_the_stream_cleanly() {
    let mut s = Sim::new(Config {
        sse_max_age: Duration::from_secs(40),
        ..config()
    });
    let c = open(&mut s, "/events?room=r", "");
    s.advance(Duration::from_secs(15));
    s.advance(Duration::from_secs(15));
    assert!(!s.is_closed(c), "two heartbeats, still open");
    s.advance(Duration::from_secs(10));
    let raw = s.peers[&c].received.clone();
    let stream = parse_stream(&raw);
    assert!(stream.ended, "the terminating chunk was sent");
    assert!(s.is_closed(c) && !s.peers[&c].aborted);
    let beats = events(&stream.body)
        .iter()
        .filter(|e| e.kind == ":")
        .count();
    assert_eq!(beats, 2);
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 0);
}

/// What an adapter may hold back a little (`Server::is_streaming`): an open stream's events,
/// not a poll's answer, a page, or a stream that ended.
#[test]
fn only_an_open_stream_is_streaming() {
    let mut s = Sim::new(Config {
        sse_max_age: Duration::from_secs(40),
        ..config()
    });
    let stream = open(&mut s, "/events?room=r", "");
    let poll = open(&mut s, "/subscribe?room=r", "");
    let page = open(&mut s, "/", "");
    assert!(s.server.is_streaming(stream));
    assert!(!s.server.is_streaming(poll), "a held poll");
    assert!(
        !s.server.is_streaming(page),
        "a keep-alive connection after its answer"
    );
    s.publish("r", "m");
    assert!(
        s.server.is_streaming(stream),
        "still streaming after an event"
    );
    assert!(!s.server.is_streaming(poll), "answered, open again");
    s.advance(Duration::from_secs(40));
    assert!(s.is_closed(stream));
    assert!(!s.server.is_streaming(stream), "ended at its maximum age");
}

#[test]
fn events_are_encoded_once_per_representation() {
    let mut s = Sim::new(config());
    let a = open(&mut s, "/events?room=r", "");
    let b = open(&mut s, "/events?room=r", "");
    let j = open(&mut s, "/events?room=r&format=json", "");
    s.log.clear();
    s.publish("r", "shared");
    let ptr = |conn| {
        s.log.iter().find_map(|o| match o {
            Output::Send { conn: c, data } if *c == conn => Some(data.as_ptr()),
            _ => None,
        })
    };
    assert_eq!(ptr(a), ptr(b));
    assert_ne!(ptr(a), ptr(j));
}

#[test]
fn slow_reader_is_cut_off() {
    let mut s = Sim::new(Config {
        max_unsent_bytes: 2000,
        // One message as JSON must fit the unsent cap (`Config::validate`).
        max_message_bytes: 100,
        ..config()
    });
    let slow = open(&mut s, "/events?room=r", "");
    let fine = open(&mut s, "/events?room=r", "");
    s.stall(slow);
    for i in 0..30 {
        s.publish("r", &format!("{i:0>90}"));
    }
    // (The harness reuses a closed connection's id, so look for the abort in the log.)
    assert!(
        s.log.contains(&Output::Abort { conn: slow }),
        "the slow reader was cut off"
    );
    assert!(!s.is_closed(fine));
    assert_eq!(messages(&received_events(&mut s, fine)).len(), 30);
    assert_eq!(metric(&mut s, "parlor_sse_stream_cutoffs_total"), 1);
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 1);
}

#[test]
fn shutdown_ends_every_stream_cleanly() {
    let mut s = Sim::new(config());
    let a = open(&mut s, "/events?room=r", "");
    let b = open(&mut s, "/events?room=q&format=json", "");
    s.server.handle_shutdown(s.now);
    s.drain();
    for c in [a, b] {
        let raw = s.peers[&c].received.clone();
        assert!(parse_stream(&raw).ended);
        assert!(s.is_closed(c) && !s.peers[&c].aborted);
    }
    assert_eq!(s.server.connection_count(), 0);
}

#[test]
fn eof_and_bytes_after_the_request() {
    let mut s = Sim::new(config());
    let c = open(&mut s, "/events?room=r", "");
    // A stream reads no more requests: a pipelined one is not answered.
    s.feed(c, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
    let raw = s.received(c);
    assert!(!String::from_utf8_lossy(&raw).contains("ok\n"));
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 1);
    s.eof(c);
    assert!(s.is_closed(c));
    assert_eq!(metric(&mut s, "parlor_sse_streams"), 0);
    // The room no longer sends to it.
    s.publish("r", "after");
}

#[test]
fn cors_follows_the_allow_list() {
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        ..config()
    });
    let c = open(&mut s, "/events", "Origin: https://ok.example\r\n");
    let raw = s.received(c);
    let head = parse_stream(&raw).head;
    assert!(
        head.contains("Access-Control-Allow-Origin: https://ok.example\r\n"),
        "{head}"
    );
    let c = open(&mut s, "/events", "Origin: https://other.example\r\n");
    let raw = s.received(c);
    let head = parse_stream(&raw).head;
    assert!(!head.contains("Access-Control"), "{head}");
}

// --- property ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Publish,
    Drop { sub: usize },
    Resume { sub: usize, header: bool },
    Advance { ms: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Publish),
        1 => (0..3usize).prop_map(|sub| Op::Drop { sub }),
        2 => (0..3usize, any::<bool>()).prop_map(|(sub, header)| Op::Resume { sub, header }),
        1 => (0..20_000u32).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A client that keeps its last event id and resumes from it.
#[derive(Default)]
struct Client {
    conn: Option<ConnId>,
    last_id: Option<String>,
    /// Every sequence number delivered, in order, and those signalled missed.
    seen: Vec<u64>,
    missed: u64,
}

impl Client {
    /// Reads what the open stream carried, then forgets the connection.
    fn take(&mut self, s: &mut Sim) {
        let Some(c) = self.conn.take() else { return };
        let raw = std::mem::take(&mut s.peers.get_mut(&c).unwrap().received);
        for e in events(&parse_stream(&raw).body) {
            match e.kind.as_str() {
                "gap" => self.missed += e.data.parse::<u64>().unwrap(),
                "message" => {
                    let id = e.id.clone().unwrap();
                    let seq: u64 = id.rsplit_once('-').unwrap().1.parse().unwrap();
                    assert_eq!(e.data, format!("m{seq}"));
                    self.seen.push(seq);
                    self.last_id = Some(id);
                }
                "ready" if e.id.is_some() => self.last_id = e.id.clone(),
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any interleaving of publishes, disconnects and resumes delivers every message exactly
    /// once and in order, except those evicted while the client was away, which a gap counts.
    #[test]
    fn every_message_exactly_once_in_order(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = Sim::new(Config { history_messages: 4, max_unsent_bytes: 1 << 20, ..config() });
        let mut clients: Vec<Client> = (0..3).map(|_| Client::default()).collect();
        let mut published = 0u64;
        for (i, client) in clients.iter_mut().enumerate() {
            let c = open(&mut s, &format!("/events?room=r&since=0&n={i}"), "");
            client.conn = Some(c);
        }
        for op in ops {
            match op {
                Op::Publish => {
                    published += 1;
                    s.publish("r", &format!("m{published}"));
                }
                Op::Drop { sub } => {
                    let client = &mut clients[sub];
                    if let Some(c) = client.conn {
                        client.take(&mut s);
                        if !s.is_closed(c) {
                            s.vanish(c);
                        }
                    }
                }
                Op::Resume { sub, header } => {
                    let client = &mut clients[sub];
                    if client.conn.is_none() {
                        let since = client.last_id.clone().unwrap_or_else(|| "0".into());
                        let c = if header {
                            open(&mut s, "/events?room=r&since=0", &format!("Last-Event-ID: {since}\r\n"))
                        } else {
                            open(&mut s, &format!("/events?room=r&since={since}"), "")
                        };
                        client.conn = Some(c);
                    }
                }
                Op::Advance { ms } => s.advance(Duration::from_millis(u64::from(ms))),
            }
        }
        // Everyone reconnects at the end and reads the rest.
        for client in clients.iter_mut() {
            if client.conn.is_none() {
                let since = client.last_id.clone().unwrap_or_else(|| "0".into());
                client.conn = Some(open(&mut s, &format!("/events?room=r&since={since}"), ""));
            }
            client.take(&mut s);
            let expected_last = published;
            prop_assert!(client.seen.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate: {:?}", client.seen);
            prop_assert_eq!(client.seen.len() as u64 + client.missed, expected_last, "seen {:?} missed {}", client.seen, client.missed);
        }
    }
}

#[test]
fn a_replay_counts_its_events_and_each_format_gets_its_own_encoding() {
    let mut s = Sim::new(config());
    let e = s.epoch();
    s.publish("r", "one");
    s.publish("r", "two");
    let c = open(&mut s, "/events?room=r&since=0", "");
    assert_eq!(messages(&received_events(&mut s, c)).len(), 2);
    assert_eq!(metric(&mut s, "parlor_sse_events_sent_total"), 2);
    // A plain and a JSON stream, both close-delimited (HTTP/1.0): one encoding each.
    let plain = s.connect();
    s.feed(plain, "GET /events?room=q HTTP/1.0\r\n\r\n");
    let json = s.connect();
    s.feed(json, "GET /events?room=q&format=json HTTP/1.0\r\n\r\n");
    s.received(plain);
    s.received(json);
    s.publish("q", "x");
    let plain_event = String::from_utf8(s.received(plain)).unwrap();
    let json_event = String::from_utf8(s.received(json)).unwrap();
    assert_eq!(plain_event, format!("id: {e}-1\ndata: x\n\n"));
    assert!(
        json_event.starts_with(&format!("id: {e}-1\ndata: {{\"cursor\":")),
        "{json_event}"
    );
}
