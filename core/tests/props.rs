//! Property: for any interleaving of publishes, polls with cursors, timeouts and reconnects,
//! each subscriber receives every message in order with no duplicate while it stays within the
//! history, and whenever it falls out of the history the gap is signalled with its exact size.

mod sim;

use std::time::Duration;

use parlor_core::{Config, ConnId};
use proptest::prelude::*;
use sim::{get_req, publish_req, Sim};

#[derive(Clone, Debug)]
enum Op {
    Publish { room: u8 },
    Poll { sub: usize },
    Advance { ms: u32 },
    Drop { sub: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2u8).prop_map(|room| Op::Publish { room }),
        4 => (0..3usize).prop_map(|sub| Op::Poll { sub }),
        1 => (0..30_000u32).prop_map(|ms| Op::Advance { ms }),
        1 => (0..3usize).prop_map(|sub| Op::Drop { sub }),
    ]
}

struct Sub {
    json: bool,
    conn: Option<ConnId>,
    polling: bool,
    cursor: String,
    /// Highest sequence number seen (or skipped over by a signalled gap).
    seen: u64,
    /// Whether the subscriber has polled with a real cursor yet (it starts with `since=0`).
    cursor_set: bool,
}

/// Checks and takes every answer `sub` received.
fn collect(s: &mut Sim, sub: &mut Sub) -> Result<(), TestCaseError> {
    let Some(conn) = sub.conn else { return Ok(()) };
    for r in s.responses(conn) {
        sub.polling = false;
        match r.status {
            204 => {
                prop_assert_eq!(r.header("Parlor-Cursor"), Some(sub.cursor.as_str()));
            }
            200 => {
                let seqs: Vec<u64>;
                let gap: u64;
                if sub.json {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    gap = v["gap"].as_u64().unwrap();
                    seqs = v["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| seq_of(m["cursor"].as_str().unwrap()))
                        .collect();
                    sub.cursor = v["next"].as_str().unwrap().to_string();
                } else {
                    gap = r.header("Parlor-Gap").map_or(0, |g| g.parse().unwrap());
                    let c = r.header("Parlor-Cursor").unwrap().to_string();
                    seqs = vec![seq_of(&c)];
                    prop_assert_eq!(r.text(), format!("m{}", seqs[0]));
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
            other => prop_assert!(false, "unexpected status {}", other),
        }
    }
    Ok(())
}

fn seq_of(cursor: &str) -> u64 {
    cursor.rsplit_once('-').unwrap().1.parse().unwrap()
}

fn poll(s: &mut Sim, sub: &mut Sub) {
    if sub.polling {
        return;
    }
    let conn = match sub.conn {
        Some(c) if !s.is_closed(c) => c,
        _ => {
            let c = s.connect();
            sub.conn = Some(c);
            c
        }
    };
    let format = if sub.json { "&format=json" } else { "" };
    s.feed(
        conn,
        get_req(&format!("/subscribe?room=r0&since={}{format}", sub.cursor)),
    );
    sub.polling = true;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn no_message_is_lost_silently(ops in proptest::collection::vec(op(), 1..120), history in 1..6usize) {
        let mut s = Sim::new(Config {
            history_messages: history,
            batch_messages: 3,
            poll_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(3600),
            head_timeout: Duration::from_secs(3600),
            ..Config::default()
        });
        let mut subs: Vec<Sub> = (0..3)
            .map(|i| Sub { json: i == 1, conn: None, polling: false, cursor: "0".into(), seen: 0, cursor_set: false })
            .collect();
        let mut published = [0u64; 2];
        for op in ops {
            match op {
                Op::Publish { room } => {
                    let n = published[room as usize] + 1;
                    let r = s.publish(&format!("r{room}"), &format!("m{n}"));
                    prop_assert_eq!(r.status, 200);
                    published[room as usize] = n;
                }
                Op::Poll { sub } => poll(&mut s, &mut subs[sub]),
                Op::Advance { ms } => s.advance(Duration::from_millis(u64::from(ms))),
                Op::Drop { sub } => {
                    if let Some(c) = subs[sub].conn.take() {
                        if !s.is_closed(c) {
                            s.vanish(c);
                        }
                    }
                    subs[sub].polling = false;
                }
            }
            for sub in subs.iter_mut() {
                collect(&mut s, sub)?;
            }
        }
        // Catch up: every subscriber ends having seen (or been told it missed) everything.
        for sub in subs.iter_mut() {
            for _ in 0..200 {
                if sub.seen == published[0] {
                    break;
                }
                poll(&mut s, sub);
                collect(&mut s, sub)?;
            }
            prop_assert_eq!(sub.seen, published[0]);
        }
    }
}

#[test]
fn publish_req_is_well_formed() {
    // Guards the helper the property relies on.
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, publish_req("r0", "m1"));
    assert_eq!(s.response(c).status, 200);
}
