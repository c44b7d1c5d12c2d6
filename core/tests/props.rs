//! Property: for any interleaving of publishes (several pipelined on one connection, to two
//! rooms), polls (plain or JSON, by `since` or by `Last-Event-ID`, some with a request pipelined
//! behind them), timeouts, reconnects, EOFs (with and without half a request) and clients that
//! stop reading until the unsent cap cuts them off, each subscriber receives every message of
//! its room, with its exact text, in order and exactly once while it stays within the history;
//! whenever it falls out of the history the gap is signalled with its exact size. At the end a
//! shutdown answers every held poll `503`.

mod sim;

use std::collections::VecDeque;
use std::time::Duration;

use parlor_core::{Config, ConnId};
use proptest::prelude::*;
use sim::{get_req, publish_req, Sim};

const ROOMS: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    /// `count` publishes to `room`, pipelined in one write on the publisher's connection.
    Publish {
        room: usize,
        count: usize,
    },
    /// The subscriber polls, with a health check pipelined behind the poll if `piped`.
    Poll {
        sub: usize,
        piped: bool,
    },
    Advance {
        ms: u32,
    },
    /// The connection is reset.
    Drop {
        sub: usize,
    },
    /// The client closes its side; if it is not polling, after half a request.
    Eof {
        sub: usize,
    },
    /// The client stops reading: nothing sent to it is flushed any more.
    Stall {
        sub: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ROOMS, 1..4usize).prop_map(|(room, count)| Op::Publish { room, count }),
        5 => (0..SUBS, any::<bool>()).prop_map(|(sub, piped)| Op::Poll { sub, piped }),
        1 => (0..30_000u32).prop_map(|ms| Op::Advance { ms }),
        1 => (0..SUBS).prop_map(|sub| Op::Drop { sub }),
        1 => (0..SUBS).prop_map(|sub| Op::Eof { sub }),
        1 => (0..SUBS).prop_map(|sub| Op::Stall { sub }),
    ]
}

/// Subscribers: (room, JSON, resumes by `Last-Event-ID`).
const SUBS: usize = 4;
const SUB_KINDS: [(usize, bool, bool); SUBS] = [
    (0, false, false),
    (0, true, true),
    (1, false, true),
    (1, true, false),
];

/// The text of message `seq` of `room`: distinct per room, with characters JSON escapes.
fn text_of(room: usize, seq: u64) -> String {
    format!("r{room} m{seq} \"q\" <\u{e9}>\\")
}

#[derive(Debug, PartialEq)]
enum Expect {
    Poll,
    Health,
}

struct Sub {
    room: usize,
    json: bool,
    last_event_id: bool,
    conn: Option<ConnId>,
    /// Answers still due on the connection, in order.
    expect: VecDeque<Expect>,
    cursor: String,
    /// Highest sequence number seen (or skipped over by a signalled gap).
    seen: u64,
    /// Whether the subscriber has polled with a real cursor yet (it starts with `since=0`).
    cursor_set: bool,
}

impl Sub {
    fn polling(&self) -> bool {
        self.expect.contains(&Expect::Poll)
    }
}

fn seq_of(cursor: &str) -> u64 {
    cursor.rsplit_once('-').unwrap().1.parse().unwrap()
}

/// Checks and takes every answer `sub` received; forgets the connection once it is closed.
fn collect(s: &mut Sim, sub: &mut Sub) -> Result<(), TestCaseError> {
    let Some(conn) = sub.conn else { return Ok(()) };
    for r in s.responses(conn) {
        let expected = sub.expect.pop_front();
        prop_assert!(expected.is_some(), "an answer nobody asked for: {:?}", r);
        if expected == Some(Expect::Health) {
            prop_assert_eq!((r.status, r.text()), (200, "ok\n"));
            continue;
        }
        match r.status {
            204 => {
                prop_assert_eq!(r.header("Parlor-Cursor"), Some(sub.cursor.as_str()));
            }
            200 => {
                let seqs: Vec<u64>;
                let gap: u64;
                let header_gap: u64 = r.header("Parlor-Gap").map_or(0, |g| g.parse().unwrap());
                if sub.json {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    prop_assert_eq!(&v["room"], &format!("r{}", sub.room));
                    gap = v["gap"].as_u64().unwrap();
                    prop_assert_eq!(header_gap, gap, "Parlor-Gap and the JSON gap agree");
                    let msgs = v["messages"].as_array().unwrap();
                    seqs = msgs
                        .iter()
                        .map(|m| seq_of(m["cursor"].as_str().unwrap()))
                        .collect();
                    for (m, &seq) in msgs.iter().zip(&seqs) {
                        prop_assert_eq!(m["text"].as_str().unwrap(), text_of(sub.room, seq));
                    }
                    sub.cursor = v["next"].as_str().unwrap().to_string();
                    prop_assert_eq!(r.header("Parlor-Cursor"), Some(sub.cursor.as_str()));
                } else {
                    let c = r.header("Parlor-Cursor").unwrap().to_string();
                    seqs = vec![seq_of(&c)];
                    gap = header_gap;
                    prop_assert_eq!(r.text(), text_of(sub.room, seqs[0]));
                    sub.cursor = c;
                }
                prop_assert!(!seqs.is_empty());
                if sub.seen == 0 && !sub.cursor_set {
                    // since=0 asks for what the room still holds: it has no position to miss from.
                    prop_assert_eq!(gap, 0);
                    prop_assert!(seqs[0] >= 1);
                } else {
                    prop_assert_eq!(seqs[0], sub.seen + 1 + gap, "first of answer after gap");
                }
                sub.cursor_set = true;
                for w in seqs.windows(2) {
                    prop_assert_eq!(w[1], w[0] + 1, "a batch is contiguous");
                }
                sub.seen = *seqs.last().unwrap();
                prop_assert_eq!(seq_of(&sub.cursor), sub.seen);
            }
            other => prop_assert!(false, "unexpected status {} in {:?}", other, r),
        }
    }
    if s.is_closed(conn) {
        let peer = &s.peers[&conn];
        prop_assert!(
            !peer.aborted || peer.stalled,
            "a client that reads was cut off"
        );
        sub.conn = None;
        sub.expect.clear();
    }
    Ok(())
}

/// The subscriber's connection, opened if it has none.
fn conn(s: &mut Sim, sub: &mut Sub) -> ConnId {
    match sub.conn {
        Some(c) => c,
        None => {
            let c = s.connect();
            sub.conn = Some(c);
            c
        }
    }
}

fn poll(s: &mut Sim, sub: &mut Sub, piped: bool) {
    if sub.polling() {
        return;
    }
    let c = conn(s, sub);
    let format = if sub.json { "&format=json" } else { "" };
    let mut req = if sub.last_event_id {
        format!(
            "GET /subscribe?room=r{}{format} HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {}\r\n\r\n",
            sub.room, sub.cursor
        )
    } else {
        get_req(&format!(
            "/subscribe?room=r{}&since={}{format}",
            sub.room, sub.cursor
        ))
    };
    sub.expect.push_back(Expect::Poll);
    if piped {
        req.push_str(&get_req("/healthz"));
        sub.expect.push_back(Expect::Health);
    }
    s.feed(c, req);
}

struct Publisher {
    conn: Option<ConnId>,
    published: [u64; ROOMS],
}

fn publish(s: &mut Sim, p: &mut Publisher, room: usize, count: usize) -> Result<(), TestCaseError> {
    let c = match p.conn {
        Some(c) if !s.is_closed(c) => c,
        _ => {
            let c = s.connect();
            p.conn = Some(c);
            c
        }
    };
    let first = p.published[room] + 1;
    let reqs: String = (0..count as u64)
        .map(|i| publish_req(&format!("r{room}"), &text_of(room, first + i)))
        .collect();
    s.feed(c, reqs);
    let answers = s.responses(c);
    prop_assert_eq!(answers.len(), count);
    for (i, r) in answers.iter().enumerate() {
        prop_assert_eq!(r.status, 200);
        let cursor = s.cursor(first + i as u64);
        prop_assert_eq!(r.header("Parlor-Cursor"), Some(cursor.as_str()));
    }
    p.published[room] += count as u64;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn no_message_is_lost_silently(
        ops in proptest::collection::vec(op(), 1..120),
        history in 1..6usize,
        history_bytes in 64..400usize,
    ) {
        let mut s = Sim::new(Config {
            history_messages: history,
            history_bytes,
            max_message_bytes: 64,
            batch_messages: 3,
            // A few answers left unread pass it (and one message as JSON fits: `validate`).
            max_unsent_bytes: 1536,
            poll_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(36_000),
            head_timeout: Duration::from_secs(36_000),
            ..Config::default()
        });
        let mut subs: Vec<Sub> = SUB_KINDS
            .iter()
            .map(|&(room, json, last_event_id)| Sub {
                room,
                json,
                last_event_id,
                conn: None,
                expect: VecDeque::new(),
                cursor: "0".into(),
                seen: 0,
                cursor_set: false,
            })
            .collect();
        let mut publisher = Publisher { conn: None, published: [0; ROOMS] };
        for op in ops {
            match op {
                Op::Publish { room, count } => publish(&mut s, &mut publisher, room, count)?,
                Op::Poll { sub, piped } => poll(&mut s, &mut subs[sub], piped),
                Op::Advance { ms } => s.advance(Duration::from_millis(u64::from(ms))),
                Op::Drop { sub } => {
                    if let Some(c) = subs[sub].conn {
                        if !s.is_closed(c) {
                            s.vanish(c);
                        }
                    }
                }
                Op::Eof { sub } => {
                    let sub = &mut subs[sub];
                    if let Some(c) = sub.conn {
                        if !s.is_closed(c) {
                            if !sub.polling() {
                                s.feed(c, "GET /subscribe?room=r0 HTT");
                            }
                            s.eof(c);
                            prop_assert!(s.is_closed(c), "EOF closes the connection");
                        }
                    }
                }
                Op::Stall { sub } => {
                    if let Some(c) = subs[sub].conn {
                        if !s.is_closed(c) {
                            s.stall(c);
                        }
                    }
                }
            }
            for sub in subs.iter_mut() {
                collect(&mut s, sub)?;
            }
        }
        // Catch up: every subscriber ends having seen (or been told it missed) everything.
        for sub in subs.iter_mut() {
            if let Some(c) = sub.conn {
                // A client that stopped reading starts again on a fresh connection.
                if s.peers[&c].stalled {
                    s.vanish(c);
                    collect(&mut s, sub)?;
                }
            }
            for _ in 0..200 {
                if sub.seen == publisher.published[sub.room] {
                    break;
                }
                poll(&mut s, sub, false);
                collect(&mut s, sub)?;
                if sub.polling() {
                    // Held with nothing new: only a timeout answers it.
                    s.advance(Duration::from_secs(25));
                    collect(&mut s, sub)?;
                }
            }
            prop_assert_eq!(sub.seen, publisher.published[sub.room]);
        }
        // Shutdown: every held poll is answered 503 and closed, and nothing else is sent.
        for sub in subs.iter_mut() {
            poll(&mut s, sub, false);
            collect(&mut s, sub)?;
            prop_assert!(sub.polling(), "caught up: the poll is held");
        }
        s.server.handle_shutdown(s.now);
        s.drain();
        for sub in subs.iter_mut() {
            let c = sub.conn.unwrap();
            let r = s.response(c);
            prop_assert_eq!((r.status, r.header("Retry-After")), (503, Some("2")));
            prop_assert!(s.responses(c).is_empty());
            prop_assert!(s.is_closed(c));
        }
        prop_assert_eq!(s.server.held_count(), 0);
    }
}

#[test]
fn publish_req_is_well_formed() {
    // Guards the helper the property relies on.
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, publish_req("r0", &text_of(0, 1)));
    assert_eq!(s.response(c).status, 200);
    assert_eq!(s.get("/subscribe?room=r0&since=0").text(), text_of(0, 1));
}
