//! Two cores sharing one message log through a fake broker, under a virtual clock.
//!
//! The fake broker keeps rooms as the contract describes (an epoch, sequence numbers from 1,
//! idempotent ids, a count cap) and delivers events to each node through its own queue, which a
//! test may shuffle (an `Appended` and the `Message` of the same append travel different paths),
//! duplicate, or cut (`Down`: requests fail and the feed loses messages until `Up`).

mod sim;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use parlor_core::broker::{BrokerEvent, BrokerFailure, BrokerRequest, Entry, History, Stored};
use parlor_core::{Config, ConnId};
use sim::{get_req, publish_req, Resp, Sim};

/// A tiny deterministic generator (xorshift), so every run shuffles alike.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct LogRoom {
    epoch: String,
    last: u64,
    entries: VecDeque<Entry>,
    ids: HashMap<Box<str>, (u64, u64)>,
}

/// The shared log and every node's event queue.
struct Broker {
    rooms: HashMap<String, LogRoom>,
    queues: Vec<VecDeque<BrokerEvent>>,
    up: bool,
    /// Nodes whose own connection to the log is broken.
    cut: Vec<bool>,
    cap: usize,
    epochs: u64,
}

impl Broker {
    fn new(nodes: usize, cap: usize) -> Broker {
        Broker {
            rooms: HashMap::new(),
            queues: vec![VecDeque::new(); nodes],
            up: true,
            cut: vec![false; nodes],
            cap,
            epochs: 0,
        }
    }

    /// Carries out a request from node `from`.
    fn handle(&mut self, from: usize, request: BrokerRequest) {
        if !self.up || self.cut[from] {
            let event = match request {
                BrokerRequest::Append { token, .. } => BrokerEvent::Appended {
                    token,
                    result: Err(BrokerFailure::Unavailable),
                },
                BrokerRequest::Fetch { token, room, .. } => BrokerEvent::Fetched {
                    token,
                    room,
                    result: Err(BrokerFailure::Unavailable),
                },
            };
            self.queues[from].push_back(event);
            return;
        }
        match request {
            BrokerRequest::Append {
                token,
                room,
                text,
                id,
                time_ms,
            } => {
                let cap = self.cap;
                if !self.rooms.contains_key(&*room) {
                    self.epochs += 1;
                }
                let epochs = self.epochs;
                let r = self.rooms.entry(room.to_string()).or_default();
                if r.epoch.is_empty() {
                    r.epoch = format!("log{epochs}");
                }
                if let Some(&(seq, t)) = id.as_ref().and_then(|i| r.ids.get(i)) {
                    self.queues[from].push_back(BrokerEvent::Appended {
                        token,
                        result: Ok(Stored {
                            epoch: r.epoch.clone().into(),
                            seq,
                            time_ms: t,
                            duplicate: true,
                        }),
                    });
                    return;
                }
                r.last += 1;
                let seq = r.last;
                if let Some(i) = &id {
                    r.ids.insert(i.clone(), (seq, time_ms));
                }
                r.entries.push_back(Entry {
                    seq,
                    time_ms,
                    text: text.clone(),
                    id: id.clone(),
                });
                while r.entries.len() > cap {
                    let old = r.entries.pop_front().unwrap();
                    if let Some(i) = old.id {
                        r.ids.remove(&i);
                    }
                }
                let epoch: Box<str> = r.epoch.clone().into();
                self.queues[from].push_back(BrokerEvent::Appended {
                    token,
                    result: Ok(Stored {
                        epoch: epoch.clone(),
                        seq,
                        time_ms,
                        duplicate: false,
                    }),
                });
                for (q, _) in self
                    .queues
                    .iter_mut()
                    .zip(&self.cut)
                    .filter(|(_, cut)| !**cut)
                {
                    q.push_back(BrokerEvent::Message {
                        room: room.clone(),
                        epoch: epoch.clone(),
                        seq,
                        time_ms,
                        text: text.clone(),
                        id: id.clone(),
                    });
                }
            }
            BrokerRequest::Fetch {
                token,
                room,
                after_seq,
                limit,
            } => {
                let history = match self.rooms.get(&*room) {
                    None => History {
                        epoch: None,
                        first_seq: 1,
                        last_seq: 0,
                        messages: Vec::new(),
                    },
                    Some(r) => History {
                        epoch: Some(r.epoch.clone().into()),
                        first_seq: r.entries.front().map_or(r.last + 1, |e| e.seq),
                        last_seq: r.last,
                        messages: r
                            .entries
                            .iter()
                            .filter(|e| e.seq > after_seq)
                            .take(limit)
                            .cloned()
                            .collect(),
                    },
                };
                self.queues[from].push_back(BrokerEvent::Fetched {
                    token,
                    room,
                    result: Ok(history),
                });
            }
        }
    }

    /// The connection to the log breaks: every node hears `Down`, and the feed loses what it
    /// had not delivered.
    fn go_down(&mut self) {
        self.up = false;
        for q in &mut self.queues {
            q.retain(|e| !matches!(e, BrokerEvent::Message { .. }));
            q.push_back(BrokerEvent::Down);
        }
    }

    fn go_up(&mut self) {
        self.up = true;
        for q in &mut self.queues {
            q.push_back(BrokerEvent::Up);
        }
    }

    /// Only node `n`'s connection breaks (or comes back): the others go on publishing, and
    /// its feed misses what they publish meanwhile.
    fn cut(&mut self, n: usize, cut: bool) {
        self.cut[n] = cut;
        let q = &mut self.queues[n];
        if cut {
            q.retain(|e| !matches!(e, BrokerEvent::Message { .. }));
            q.push_back(BrokerEvent::Down);
        } else {
            q.push_back(BrokerEvent::Up);
        }
    }

    /// Redis loses everything (a restart without persistence, a flush).
    fn flush(&mut self) {
        self.rooms.clear();
    }
}

/// Nodes, the broker, and the plumbing between them.
struct Cluster {
    nodes: Vec<Sim>,
    broker: Broker,
    rng: Rng,
    /// Shuffle and duplicate events on their way to the nodes.
    chaos: bool,
}

fn shared() -> Config {
    Config {
        shared_log: true,
        history_messages: 64,
        ..Config::default()
    }
}

impl Cluster {
    fn new(nodes: usize, chaos: bool) -> Cluster {
        Cluster::with(nodes, chaos, shared())
    }

    fn with(nodes: usize, chaos: bool, config: Config) -> Cluster {
        let mut c = Cluster {
            nodes: (0..nodes).map(|_| Sim::new(config.clone())).collect(),
            broker: Broker::new(nodes, 64),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            chaos,
        };
        c.broker
            .queues
            .iter_mut()
            .for_each(|q| q.push_back(BrokerEvent::Up));
        c.settle();
        c
    }

    /// Moves requests to the broker and events to the nodes until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for n in 0..self.nodes.len() {
                while let Some(r) = self.nodes[n].server.poll_broker() {
                    self.broker.handle(n, r);
                    moved = true;
                }
            }
            for n in 0..self.nodes.len() {
                let q = &mut self.broker.queues[n];
                if q.is_empty() {
                    continue;
                }
                // With chaos, take a random one of the first three, and sometimes deliver a
                // feed message twice; otherwise in order.
                let i = if self.chaos {
                    self.rng.below(q.len().min(3) as u64) as usize
                } else {
                    0
                };
                // Up and Down keep their place: a reordering never moves an event across them.
                let i = if q
                    .iter()
                    .take(i + 1)
                    .any(|e| matches!(e, BrokerEvent::Up | BrokerEvent::Down))
                {
                    0
                } else {
                    i
                };
                let event = q.remove(i).unwrap();
                if self.chaos
                    && matches!(event, BrokerEvent::Message { .. })
                    && self.rng.below(4) == 0
                {
                    q.push_back(event.clone());
                }
                let node = &mut self.nodes[n];
                node.server.handle_broker(event, node.now);
                node.drain();
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    fn send(&mut self, n: usize, conn: ConnId, raw: &str) {
        self.nodes[n].feed(conn, raw);
        self.settle();
    }

    fn request(&mut self, n: usize, raw: &str) -> (ConnId, Vec<Resp>) {
        let c = self.nodes[n].connect();
        self.send(n, c, raw);
        let r = self.nodes[n].responses(c);
        (c, r)
    }

    fn publish(&mut self, n: usize, room: &str, text: &str) -> Resp {
        let (_, mut r) = self.request(n, &publish_req(room, text));
        assert_eq!(r.len(), 1, "one answer to a publish");
        r.remove(0)
    }
}

#[test]
fn a_poll_on_one_node_is_woken_by_a_publish_on_another() {
    let mut c = Cluster::new(2, false);
    let (poll, got) = c.request(1, &get_req("/subscribe?room=r"));
    assert!(got.is_empty(), "held: {got:?}");
    assert!(c.nodes[1].server.held_count() == 1);
    let answer = c.publish(0, "r", "hello");
    assert_eq!(answer.status, 200);
    let cursor = answer.header("Parlor-Cursor").unwrap().to_string();
    let woken = c.nodes[1].response(poll);
    assert_eq!((woken.status, woken.text()), (200, "hello"));
    assert_eq!(woken.header("Parlor-Cursor"), Some(cursor.as_str()));
    // The cursor handed out by node 0 is valid on node 1, and on node 0 itself.
    for n in [0, 1] {
        let (_, r) = c.request(n, &get_req(&format!("/subscribe?room=r&since={cursor}")));
        assert!(
            r.is_empty(),
            "node {n} holds a poll at the newest cursor: {r:?}"
        );
    }
    c.publish(1, "r", "again");
    let (_, r) = c.request(0, &get_req(&format!("/subscribe?room=r&since={cursor}")));
    assert_eq!(r[0].text(), "again");
}

#[test]
fn a_room_new_to_a_node_is_loaded_before_a_cursor_is_read() {
    let mut c = Cluster::new(2, false);
    for i in 1..=3 {
        c.publish(0, "r", &format!("m{i}"));
    }
    // Node 1 never saw room r; a cursor from node 0 is read against the loaded room.
    let first = c.publish(0, "r", "m4");
    let cursor = first.header("Parlor-Cursor").unwrap();
    let since_two = cursor.replace("-4", "-2");
    let (_, r) = c.request(1, &get_req(&format!("/subscribe?room=r&since={since_two}")));
    assert_eq!((r[0].status, r[0].text()), (200, "m3"));
    assert_eq!(r[0].header("Parlor-Gap"), None);
    let (_, r) = c.request(1, &get_req("/subscribe?room=r&since=0"));
    assert_eq!(r[0].text(), "m1");
}

#[test]
fn round_robin_cursor_clients_see_every_message_once_in_order() {
    // Several shuffles of the same story.
    for seed in 1..=8u64 {
        round_robin(
            2 + (seed % 2) as usize,
            seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
    }
}

fn round_robin(nodes: usize, seed: u64) {
    let mut c = Cluster::new(nodes, true);
    c.rng = Rng(seed);
    let rounds = 300;
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut published = 0;
    for round in 0..rounds {
        // Publishers on both nodes.
        if round % 3 != 2 {
            let n = round % nodes;
            let text = format!("p{published}");
            let r = c.publish(n, "r", &text);
            if r.status == 200 {
                published += 1;
            } else {
                assert_eq!(r.status, 503, "{r:?}");
                assert!(r.header("Retry-After").is_some());
            }
        }
        // One node loses the log for a while (the other goes on), then the log goes away for
        // everyone, and comes back.
        match round % 50 {
            10 => c.broker.cut(1, true),
            25 => c.broker.cut(1, false),
            30 => c.broker.cut(0, true),
            38 => c.broker.cut(0, false),
            40 => c.broker.go_down(),
            45 => c.broker.go_up(),
            _ => {}
        }
        c.settle();
        // A cursor client polls a different node each time.
        let n = (round / 2) % nodes;
        let (conn, r) = c.request(n, &get_req(&format!("/subscribe?room=r&since={cursor}")));
        let r = match r.into_iter().next() {
            Some(r) => r,
            None => {
                // Held: only when the node has nothing newer, unless it cannot know.
                let seq = cursor.rsplit('-').next().unwrap().parse::<u64>().unwrap();
                let last = c.broker.rooms.get("r").map_or(0, |r| r.last);
                if c.broker.up && !c.broker.cut[n] {
                    assert_eq!(
                        seq, last,
                        "round {round}: node {n} holds a poll behind the log"
                    );
                }
                // End the poll by its timeout.
                c.nodes[n].advance(Duration::from_secs(30));
                c.settle();
                c.nodes[n].response(conn)
            }
        };
        match r.status {
            200 => {
                assert_eq!(r.header("Parlor-Gap"), None, "nothing is ever missed");
                seen.push(r.text().to_string());
                cursor = r.header("Parlor-Cursor").unwrap().to_string();
            }
            204 => {}
            503 => assert!(r.header("Retry-After").is_some()),
            s => panic!("unexpected {s}: {r:?}"),
        }
    }
    // Drain the rest.
    c.broker.go_up();
    c.settle();
    for i in 0..1000 {
        let n = i % nodes;
        let (_, r) = c.request(n, &get_req(&format!("/subscribe?room=r&since={cursor}")));
        let Some(r) = r.into_iter().next() else {
            break;
        };
        assert_eq!(r.status, 200, "{r:?}");
        seen.push(r.text().to_string());
        cursor = r.header("Parlor-Cursor").unwrap().to_string();
    }
    let expected: Vec<String> = (0..published).map(|i| format!("p{i}")).collect();
    assert!(published > 100, "{published}");
    assert_eq!(seen, expected);
}

#[test]
fn held_polls_catch_up_after_the_log_comes_back() {
    let mut c = Cluster::new(2, false);
    let first = c.publish(0, "r", "one");
    let cursor = first.header("Parlor-Cursor").unwrap().to_string();
    let (poll, r) = c.request(1, &get_req(&format!("/subscribe?room=r&since={cursor}")));
    assert!(r.is_empty());
    c.broker.go_down();
    c.settle();
    assert_eq!(c.nodes[0].get("/healthz").status, 503);
    let refused = c.publish(0, "r", "lost");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("Retry-After"), Some("2"));
    // Appended while node 1's feed was away (another writer, straight into the log).
    c.broker.up = true;
    c.broker.handle(
        0,
        BrokerRequest::Append {
            token: 999,
            room: "r".into(),
            text: Bytes::from_static(b"two"),
            id: None,
            time_ms: 1,
        },
    );
    c.broker.queues[1].retain(|e| !matches!(e, BrokerEvent::Message { .. }));
    c.broker.queues[0].clear();
    c.broker.up = false;
    c.settle();
    assert!(c.nodes[1].responses(poll).is_empty(), "held while down");
    assert_eq!(c.nodes[1].server.held_count(), 1);
    c.broker.go_up();
    c.settle();
    let r = c.nodes[1].response(poll);
    assert_eq!((r.status, r.text()), (200, "two"));
    assert_eq!(c.nodes[0].get("/healthz").status, 200);
}

#[test]
fn one_id_published_on_two_nodes_is_one_message() {
    let mut c = Cluster::new(2, false);
    let body = r#"{"message":"once","id":"k1"}"#;
    let raw = format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_, a) = c.request(0, &raw);
    let (_, b) = c.request(1, &raw);
    assert_eq!((a[0].status, b[0].status), (200, 200));
    assert_eq!(a[0].header("Parlor-Cursor"), b[0].header("Parlor-Cursor"));
    let (_, all) = c.request(1, &get_req("/subscribe?room=r&since=0&format=json"));
    assert_eq!(all[0].text().matches("once").count(), 1);
    // Each node counts what its own publishers stored: node 1's was a duplicate.
    for (n, want) in [(0, 1), (1, 0)] {
        let (_, m) = c.request(n, &get_req("/metrics"));
        let line = format!("parlor_messages_published_total {want}");
        assert!(
            m[0].text().lines().any(|l| l == line),
            "node {n}: {}",
            m[0].text()
        );
    }
}

#[test]
fn a_failed_append_counts_one_broker_failure() {
    let mut c = Cluster::new(1, false);
    c.broker.cut[0] = true;
    let r = c.publish(0, "r", "lost");
    assert_eq!(r.status, 503);
    let (_, m) = c.request(0, &get_req("/metrics"));
    let text = m[0].text();
    assert!(
        text.lines().any(|l| l == "parlor_broker_failures_total 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "parlor_messages_published_total 0"),
        "{text}"
    );
}

#[test]
fn a_log_that_lost_its_data_gives_old_cursors_a_new_epoch() {
    let mut c = Cluster::new(2, false);
    let old = c.publish(0, "r", "before");
    let old = old.header("Parlor-Cursor").unwrap().to_string();
    let (poll, r) = c.request(1, &get_req(&format!("/subscribe?room=r&since={old}")));
    assert!(r.is_empty());
    c.broker.flush();
    c.publish(0, "r", "after");
    // The held poll is answered with its cursor unchanged, and coming back with it gets the
    // new epoch's messages from their start, never a position read in the wrong epoch.
    let r = c.nodes[1].response(poll);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Parlor-Cursor"), Some(old.as_str()));
    let (_, r) = c.request(1, &get_req(&format!("/subscribe?room=r&since={old}")));
    assert_eq!(r[0].text(), "after");
    assert_eq!(r[0].header("Parlor-Reset"), Some("1"), "the reset signal");
    let new = r[0].header("Parlor-Cursor").unwrap();
    assert_ne!(new.split('-').next(), old.split('-').next());
}

#[test]
fn a_publish_the_log_never_answers_gets_503() {
    let mut c = Cluster::new(1, false);
    let n = &mut c.nodes[0];
    let conn = n.connect();
    n.feed(conn, publish_req("r", "hello"));
    // The request goes out, and no answer ever comes.
    assert!(n.server.poll_broker().is_some());
    assert!(n.server.is_waiting(conn));
    // The wait lasts broker_timeout (5 s), to the instant.
    n.advance(Duration::from_millis(4999));
    assert!(n.server.is_waiting(conn) && n.received(conn).is_empty());
    n.advance(Duration::from_millis(1));
    let r = n.response(conn);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("2"));
    assert!(!n.server.is_waiting(conn), "the wait ended with its answer");
    // The connection serves its next request.
    n.feed(conn, get_req("/metrics"));
    let m = n.response(conn);
    assert!(m.text().contains("parlor_broker_up 1"), "{}", m.text());
    assert!(
        m.text().contains("parlor_broker_failures_total 1"),
        "{}",
        m.text()
    );
    assert!(m.text().contains("parlor_broker_waiting 0"), "{}", m.text());
}

#[test]
fn memory_mode_asks_nothing_of_a_broker() {
    let mut s = Sim::default();
    s.publish("r", "x");
    assert_eq!(s.server.poll_broker(), None);
    assert!(!s.get("/metrics").text().contains("parlor_broker_up"));
}

#[test]
fn a_gap_in_the_feed_is_filled_by_a_fetch() {
    let mut c = Cluster::new(2, false);
    let first = c.publish(0, "r", "one");
    let cursor = first.header("Parlor-Cursor").unwrap().to_string();
    let (poll, r) = c.request(
        1,
        &get_req(&format!("/subscribe?room=r&since={cursor}&format=json")),
    );
    assert!(r.is_empty());
    // Node 1's feed loses "two" (against the contract's ordering, the way a lost Pub/Sub
    // message would look), then hears "three": the hole is seen and fetched.
    let conn = c.nodes[0].connect();
    c.nodes[0].feed(conn, publish_req("r", "two"));
    while let Some(r) = c.nodes[0].server.poll_broker() {
        c.broker.handle(0, r);
    }
    c.broker.queues[1].clear();
    c.settle();
    assert!(
        c.nodes[1].responses(poll).is_empty(),
        "node 1 has not heard of it"
    );
    c.publish(0, "r", "three");
    let r = c.nodes[1].response(poll);
    let body = r.text();
    assert!(
        body.find("two").unwrap() < body.find("three").unwrap(),
        "{body}"
    );
}

#[test]
fn a_cursor_older_than_the_cache_is_answered_from_the_log() {
    // Each node caches about 20 bytes of text; the log keeps 64 messages.
    let config = Config {
        history_bytes: 20,
        max_message_bytes: 10,
        ..shared()
    };
    let mut c = Cluster::with(2, false, config);
    let (_, r) = c.request(1, &get_req("/subscribe?room=r&since=0"));
    assert!(r.is_empty(), "node 1 loads the room and holds");
    let mut cursors = Vec::new();
    for i in 0..30 {
        let r = c.publish(0, "r", &format!("m{i:02}"));
        cursors.push(r.header("Parlor-Cursor").unwrap().to_string());
    }
    for n in [0, 1] {
        let target = format!("/subscribe?room=r&since={}&format=json", cursors[2]);
        let (_, r) = c.request(n, &get_req(&target));
        let body = r[0].text();
        assert!(
            body.starts_with(r#"{"room":"r","messages":[{"cursor""#),
            "{body}"
        );
        assert!(body.contains(r#""text":"m03"}"#), "node {n}: {body}");
        assert!(body.ends_with(r#""gap":0}"#), "node {n}: {body}");
        assert_eq!(r[0].header("Parlor-Gap"), None);
        // The cache is as it was: since=0 still starts where it starts.
        let (_, r) = c.request(n, &get_req("/subscribe?room=r&since=0"));
        assert_ne!(r[0].text(), "m00", "node {n}");
    }
}

/// Whatever the broker reports, in whatever order (stale tokens, holes, unknown epochs,
/// histories that contradict the feed), the core never panics and its invariants hold.
#[test]
fn any_broker_input_keeps_the_core_whole() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut s = Sim::new(Config {
        history_messages: 4,
        batch_messages: 3,
        poll_timeout: Duration::from_secs(3),
        broker_timeout: Duration::from_secs(2),
        ..shared()
    });
    let rooms = ["a", "b"];
    let epochs = ["e1", "e2", "zz"];
    let mut requests: Vec<BrokerRequest> = Vec::new();
    for step in 0..20_000u64 {
        let room = rooms[rng.below(2) as usize];
        let epoch = epochs[rng.below(3) as usize];
        match rng.below(10) {
            0 => {
                let c = s.connect();
                let since = match rng.below(4) {
                    0 => String::new(),
                    1 => "&since=0".into(),
                    _ => format!("&since={epoch}-{}", rng.below(12)),
                };
                let json = if rng.below(2) == 0 {
                    "&format=json"
                } else {
                    ""
                };
                s.feed(c, get_req(&format!("/subscribe?room={room}{since}{json}")));
            }
            1 => {
                let c = s.connect();
                s.feed(c, publish_req(room, &format!("m{step}")));
            }
            2 => s.advance(Duration::from_millis(rng.below(3000))),
            3 => {
                let event = if rng.below(2) == 0 {
                    BrokerEvent::Up
                } else {
                    BrokerEvent::Down
                };
                s.server.handle_broker(event, s.now);
            }
            4 | 5 => {
                let seq = rng.below(12);
                s.server.handle_broker(
                    BrokerEvent::Message {
                        room: room.into(),
                        epoch: epoch.into(),
                        seq,
                        time_ms: step,
                        text: Bytes::from(format!("x{step}")),
                        id: None,
                    },
                    s.now,
                );
            }
            _ => {
                // Answer a real request (or a made-up token), truthfully or not.
                let request = (!requests.is_empty())
                    .then(|| requests.swap_remove(rng.below(requests.len() as u64) as usize));
                let token = request.as_ref().map_or(rng.below(50), BrokerRequest::token);
                let event = match (&request, rng.below(3)) {
                    (Some(BrokerRequest::Append { .. }), 0) | (None, 0) => BrokerEvent::Appended {
                        token,
                        result: Ok(Stored {
                            epoch: epoch.into(),
                            seq: rng.below(12),
                            time_ms: step,
                            duplicate: rng.below(4) == 0,
                        }),
                    },
                    (_, 1) => BrokerEvent::Appended {
                        token,
                        result: Err(BrokerFailure::Unknown),
                    },
                    _ => {
                        let first = 1 + rng.below(8);
                        let last = first + rng.below(5);
                        let messages = (first..=last)
                            .filter(|_| rng.below(5) != 0)
                            .map(|seq| Entry {
                                seq,
                                time_ms: step,
                                text: Bytes::from(format!("f{seq}")),
                                id: None,
                            })
                            .collect();
                        BrokerEvent::Fetched {
                            token,
                            room: room.into(),
                            result: if rng.below(6) == 0 {
                                Err(BrokerFailure::Unavailable)
                            } else {
                                Ok(History {
                                    epoch: (rng.below(5) != 0).then(|| epoch.into()),
                                    first_seq: first,
                                    last_seq: last,
                                    messages,
                                })
                            },
                        }
                    }
                };
                s.server.handle_broker(event, s.now);
            }
        }
        s.drain();
        while let Some(r) = s.server.poll_broker() {
            requests.push(r);
        }
        if requests.len() > 200 {
            requests.drain(..100);
        }
    }
}

#[test]
fn event_streams_on_another_node_get_every_message_once() {
    let mut c = Cluster::new(2, false);
    let first = c.publish(0, "r", "one");
    let cursor = first.header("Parlor-Cursor").unwrap().to_string();
    let epoch = cursor.split('-').next().unwrap().to_string();
    // Node 1 has not loaded room r: the stream waits for the load, then starts after the cursor.
    let stream = c.nodes[1].connect();
    c.send(
        1,
        stream,
        &get_req(&format!("/events?room=r&since={cursor}")),
    );
    c.publish(0, "r", "two");
    // Node 1's feed goes away; three messages are published meanwhile; on Up it catches up and
    // the stream gets each of them, in order, once.
    c.broker.cut(1, true);
    c.settle();
    for text in ["three", "four", "five"] {
        c.publish(0, "r", text);
    }
    c.broker.cut(1, false);
    c.settle();
    let got = String::from_utf8(c.nodes[1].received(stream)).unwrap();
    let ids: Vec<&str> = got.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    // The `ready` event names the cursor the stream starts from; then one event per message.
    let want: Vec<String> = (1..=5).map(|s| format!("{epoch}-{s}")).collect();
    assert_eq!(ids, want, "{got}");
    assert!(
        got.contains(&format!("id: {epoch}-1\nevent: ready\n")),
        "{got}"
    );
    for text in ["two", "three", "four", "five"] {
        assert_eq!(got.matches(&format!("data: {text}\n")).count(), 1, "{got}");
    }
    assert!(!got.contains("data: one\n"), "{got}");
}

#[test]
fn publishes_waiting_at_once_are_told_apart() {
    // Two publishes wait for their appends at the same time: each request carries its own
    // token, and each publisher is answered for its own message, whatever the order.
    let mut c = Cluster::new(1, false);
    let n = &mut c.nodes[0];
    let first = n.connect();
    let second = n.connect();
    n.feed(first, publish_req("r", "one"));
    n.feed(second, publish_req("r", "two"));
    let mut requests: Vec<BrokerRequest> = std::iter::from_fn(|| n.server.poll_broker()).collect();
    let tokens: Vec<u64> = requests
        .iter()
        .map(|r| match r {
            BrokerRequest::Append { token, .. } => *token,
            other => panic!("expected appends, got {other:?}"),
        })
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    // The log stores the second first.
    requests.reverse();
    for r in requests {
        c.broker.handle(0, r);
    }
    c.settle();
    let n = &mut c.nodes[0];
    let (one, two) = (n.response(first), n.response(second));
    assert_eq!((one.status, two.status), (200, 200));
    // The second publish was stored first: sequence 1; the first got 2.
    assert!(two.text().ends_with("-1\n"), "{}", two.text());
    assert!(one.text().ends_with("-2\n"), "{}", one.text());
}

#[test]
fn a_failed_fetch_counts_one_broker_failure() {
    let mut c = Cluster::new(1, false);
    c.broker.cut[0] = true;
    let (_, r) = c.request(0, &get_req("/subscribe?room=r&since=0"));
    assert_eq!(r.len(), 1, "one answer to the poll");
    let (_, m) = c.request(0, &get_req("/metrics"));
    let text = m[0].text();
    assert!(
        text.lines().any(|l| l == "parlor_broker_failures_total 1"),
        "{text}"
    );
}

#[test]
fn a_request_names_its_token_and_room_and_a_failure_says_what_it_was() {
    // What a broker service reads off a request to answer it (the token carried back, the room
    // a fetch's answer names), and the text a failure shows in logs.
    let append = BrokerRequest::Append {
        token: 7,
        room: "lobby".into(),
        text: Bytes::from_static(b"hi"),
        id: None,
        time_ms: 0,
    };
    let fetch = BrokerRequest::Fetch {
        token: 8,
        room: "r-2".into(),
        after_seq: 0,
        limit: 0,
    };
    assert_eq!((append.token(), append.room()), (7, "lobby"));
    assert_eq!((fetch.token(), fetch.room()), (8, "r-2"));
    for (failure, text) in [
        (BrokerFailure::Unavailable, "the message log is unavailable"),
        (BrokerFailure::Overloaded, "the message log's queue is full"),
        (
            BrokerFailure::Unknown,
            "the message log did not answer in time",
        ),
        (
            BrokerFailure::Rejected("OOM".into()),
            "the message log refused: OOM",
        ),
    ] {
        assert_eq!(failure.to_string(), text);
    }
}

/// One node whose log is answered by hand: each fetch's answer is written out, sequence
/// numbers and all, so each rule of merging an answer into the cache is met on its boundary.
mod by_hand {
    use super::*;

    fn node() -> Sim {
        node_with(shared())
    }

    fn node_with(config: Config) -> Sim {
        let mut s = Sim::new(config);
        s.server.handle_broker(BrokerEvent::Up, s.now);
        s.drain();
        s
    }

    /// The next request must be a fetch of room `r`: its token and `after_seq`.
    fn next_fetch(s: &mut Sim) -> (u64, u64) {
        match s.server.poll_broker() {
            Some(BrokerRequest::Fetch {
                token,
                room,
                after_seq,
                ..
            }) if &*room == "r" => (token, after_seq),
            other => panic!("expected a fetch of r, got {other:?}"),
        }
    }

    /// The log's answer to fetch `token`: epoch `log1` (or none), `first..=last` retained, and
    /// the messages `seqs` (text `m<seq>`).
    fn answer(s: &mut Sim, token: u64, epoch: bool, first: u64, last: u64, seqs: &[u64]) {
        answer_in(s, token, epoch.then_some("log1"), first, last, seqs);
    }

    fn answer_in(
        s: &mut Sim,
        token: u64,
        epoch: Option<&str>,
        first: u64,
        last: u64,
        seqs: &[u64],
    ) {
        let messages = seqs
            .iter()
            .map(|&seq| Entry {
                seq,
                time_ms: seq,
                text: Bytes::from(format!("m{seq}")),
                id: None,
            })
            .collect();
        let history = History {
            epoch: epoch.map(Into::into),
            first_seq: first,
            last_seq: last,
            messages,
        };
        s.server.handle_broker(
            BrokerEvent::Fetched {
                token,
                room: "r".into(),
                result: Ok(history),
            },
            s.now,
        );
        s.drain();
    }

    fn feed_message(s: &mut Sim, seq: u64) {
        let event = BrokerEvent::Message {
            room: "r".into(),
            epoch: "log1".into(),
            seq,
            time_ms: seq,
            text: Bytes::from(format!("m{seq}")),
            id: None,
        };
        s.server.handle_broker(event, s.now);
        s.drain();
    }

    fn poll(s: &mut Sim, since: &str) -> ConnId {
        let c = s.connect();
        s.feed(c, get_req(&format!("/subscribe?room=r&since={since}")));
        c
    }

    /// Room r loaded with messages 1 to 3 of epoch `log1`, and a poll held at `log1-3`.
    fn loaded() -> (Sim, ConnId) {
        let mut s = node();
        let held = poll(&mut s, "log1-3");
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 0);
        answer(&mut s, token, true, 1, 3, &[1, 2, 3]);
        assert!(s.received(held).is_empty(), "held at the newest message");
        assert_eq!(s.server.poll_broker(), None);
        (s, held)
    }

    #[test]
    fn an_answer_with_more_to_read_or_asked_again_meanwhile_is_followed_by_another_fetch() {
        let mut s = node();
        let p = poll(&mut s, "0");
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 0);
        // The log holds 1 to 5 and sent only 1 and 2 (its limit): read on after 2.
        answer(&mut s, token, true, 1, 5, &[1, 2]);
        assert!(
            s.received(p).is_empty(),
            "the poll waits for the next answer"
        );
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 2);
        assert_eq!(s.server.poll_broker(), None);
        // Asked again while that fetch is in flight (the feed came back): once the answer is
        // in, whole this time, the log is read once more, after 5.
        s.server.handle_broker(BrokerEvent::Up, s.now);
        s.drain();
        assert_eq!(
            s.server.poll_broker(),
            None,
            "one fetch in flight at a time"
        );
        answer(&mut s, token, true, 1, 5, &[3, 4, 5]);
        assert!(s.received(p).is_empty(), "the poll waits for that one too");
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 5);
        answer(&mut s, token, true, 1, 5, &[]);
        assert_eq!(s.server.poll_broker(), None, "nothing more to read");
        let r = s.response(p);
        assert_eq!((r.status, r.text()), (200, "m1"));
    }

    #[test]
    fn a_log_that_holds_nothing_of_a_cached_room_releases_its_polls() {
        let (mut s, held) = loaded();
        // The feed comes back; the catch-up fetch finds the room gone from the log.
        s.server.handle_broker(BrokerEvent::Up, s.now);
        s.drain();
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 3);
        answer(&mut s, token, false, 1, 0, &[]);
        let r = s.response(held);
        assert_eq!(r.status, 204, "answered at once, cursor unchanged");
        assert_eq!(r.header("Parlor-Cursor"), Some("log1-3"));
    }

    #[test]
    fn an_answer_that_starts_right_after_the_cache_extends_it() {
        let (mut s, held) = loaded();
        s.server.handle_broker(BrokerEvent::Up, s.now);
        s.drain();
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 3);
        // The log trimmed 1 to 3 meanwhile: it starts at 4, right after the cache, so nothing
        // was missed and the held poll gets 4.
        answer(&mut s, token, true, 4, 4, &[4]);
        let r = s.response(held);
        assert_eq!((r.status, r.text()), (200, "m4"));
        assert_eq!(r.header("Parlor-Gap"), None);
        assert_eq!(r.header("Parlor-Cursor"), Some("log1-4"));
        // The cache kept 1 to 3 beside it.
        let (_, r) = s.request(&get_req("/subscribe?room=r&since=0"));
        assert_eq!((r.status, r.text()), (200, "m1"));
    }

    #[test]
    fn a_message_the_feed_brought_during_a_fetch_is_skipped_in_its_answer() {
        let (mut s, held) = loaded();
        s.server.handle_broker(BrokerEvent::Up, s.now);
        s.drain();
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 3);
        // While the fetch (after 3) is out, the feed brings 4.
        feed_message(&mut s, 4);
        let r = s.response(held);
        assert_eq!((r.status, r.text()), (200, "m4"));
        let at_four = poll(&mut s, "log1-4");
        assert!(s.received(at_four).is_empty());
        // The answer holds 4 again, then 5: 4 is skipped, 5 is cached and delivered, and
        // nothing is left to read.
        answer(&mut s, token, true, 1, 5, &[4, 5]);
        let r = s.response(at_four);
        assert_eq!((r.status, r.text()), (200, "m5"));
        assert_eq!(s.server.poll_broker(), None);
    }

    /// Room r cached as 7 to 10 of `log1` (the log trimmed 1 to 6), and a poll at `log1-2`,
    /// older than the cache, waiting for a fetch of its own (after 2): its token.
    fn older_poll() -> (Sim, ConnId, u64) {
        let mut s = node_with(Config {
            history_messages: 4,
            ..shared()
        });
        let p = poll(&mut s, "0");
        let (token, _) = next_fetch(&mut s);
        answer(&mut s, token, true, 7, 10, &[7, 8, 9, 10]);
        assert_eq!(s.response(p).text(), "m7");
        let p = poll(&mut s, "log1-2");
        let (token, after) = next_fetch(&mut s);
        assert_eq!(after, 2, "the poll's own fetch");
        assert!(s.received(p).is_empty());
        (s, p, token)
    }

    #[test]
    fn an_older_poll_is_not_answered_from_another_epoch() {
        let (mut s, p, token) = older_poll();
        // The log lost the room meanwhile and numbers it anew: its 3 to 5 are not log1's.
        answer_in(&mut s, token, Some("log2"), 1, 5, &[3, 4, 5]);
        let r = s.response(p);
        assert_eq!((r.status, r.text()), (200, "m7"), "answered from the cache");
        assert_eq!(r.header("Parlor-Cursor"), Some("log1-7"));
    }

    #[test]
    fn an_older_poll_whose_fetch_fails_is_503_and_one_failure() {
        let (mut s, p, token) = older_poll();
        s.server.handle_broker(
            BrokerEvent::Fetched {
                token,
                room: "r".into(),
                result: Err(BrokerFailure::Unavailable),
            },
            s.now,
        );
        s.drain();
        assert_eq!(s.response(p).status, 503);
        let m = s.get("/metrics");
        assert!(
            m.text()
                .lines()
                .any(|l| l == "parlor_broker_failures_total 1"),
            "{}",
            m.text()
        );
    }
}
