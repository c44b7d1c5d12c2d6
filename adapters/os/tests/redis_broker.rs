//! `Broker` against a real `redis-server`: two nodes sharing the feed, answers by token, and a
//! Redis that dies, comes back, or freezes.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parlor_core::broker::{BrokerEvent, BrokerFailure, BrokerRequest, Stored};
use parlor_os::redis_log::{Broker, BrokerConfig, RedisLog};
use parlor_os::testkit_redis::RedisServer;

/// Long enough for any event on a loaded machine; a wait that passes it is a failure.
const PATIENCE: Duration = Duration::from_secs(20);

/// A broker and the channel its `notify` signals, the way an adapter's loop is woken.
struct Node {
    broker: Broker,
    woken: Receiver<()>,
}

impl Node {
    fn spawn(config: BrokerConfig) -> Node {
        let (tx, woken) = mpsc::channel();
        let broker = Broker::spawn_with(config, move || {
            let _ = tx.send(());
        })
        .expect("spawn the broker");
        Node { broker, woken }
    }

    /// The next event, waiting for a notification when none is there.
    fn next(&self) -> BrokerEvent {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(event) = self.broker.try_recv() {
                return event;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no broker event within {PATIENCE:?}");
            let _ = self.woken.recv_timeout(left);
        }
    }

    /// The next `n` events, in arrival order.
    fn take(&self, n: usize) -> Vec<BrokerEvent> {
        (0..n).map(|_| self.next()).collect()
    }

    fn append(&self, token: u64, text: &str, id: Option<&str>) {
        self.broker.submit(BrokerRequest::Append {
            token,
            room: "main".into(),
            text: Bytes::copy_from_slice(text.as_bytes()),
            id: id.map(Into::into),
            time_ms: 1000 + token,
        });
    }
}

fn quick_config(redis: &RedisServer) -> BrokerConfig {
    BrokerConfig {
        timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ping_interval: Duration::from_millis(300),
        ..BrokerConfig::new(&redis.url(), "parlor:", 100)
    }
}

/// Splits an append's two events (its answer and its feed message, in either order).
fn answer_and_message(events: Vec<BrokerEvent>) -> (BrokerEvent, BrokerEvent) {
    let [a, b] = <[BrokerEvent; 2]>::try_from(events).unwrap();
    if matches!(a, BrokerEvent::Appended { .. }) {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn a_node_sees_what_another_node_appends_and_answers_by_token() {
    let redis = RedisServer::start();
    let node = Node::spawn(quick_config(&redis));
    assert_eq!(node.next(), BrokerEvent::Up);

    // Node B, a plain connection, appends: node A hears it on the feed.
    let mut node_b = RedisLog::connect(&redis.url(), "parlor:").unwrap();
    let text = b"from B, with , and 3: and \0 and \xff";
    let stored = node_b.append("main", text, Some("b-1"), 77, 100).unwrap();
    assert_eq!(
        node.next(),
        BrokerEvent::Message {
            room: "main".into(),
            epoch: stored.epoch.clone(),
            seq: 1,
            time_ms: 77,
            text: Bytes::from_static(text),
            id: Some("b-1".into()),
        }
    );

    // Node A appends through its broker: the answer carries the token, the feed the message.
    node.append(7, "from A", None);
    let (answer, message) = answer_and_message(node.take(2));
    assert_eq!(
        answer,
        BrokerEvent::Appended {
            token: 7,
            result: Ok(Stored {
                epoch: stored.epoch.clone(),
                seq: 2,
                time_ms: 1007,
                duplicate: false
            })
        }
    );
    assert!(matches!(message, BrokerEvent::Message { seq: 2, .. }));

    // The same id through node A: the original cursor, and nothing on the feed.
    node.append(8, "again", Some("b-1"));
    assert_eq!(
        node.next(),
        BrokerEvent::Appended {
            token: 8,
            result: Ok(Stored {
                epoch: stored.epoch.clone(),
                seq: 1,
                time_ms: 77,
                duplicate: true
            })
        }
    );

    node.broker.submit(BrokerRequest::Fetch {
        token: 9,
        room: "main".into(),
        after_seq: 1,
        limit: 10,
    });
    let BrokerEvent::Fetched {
        token: 9,
        room,
        result: Ok(history),
    } = node.next()
    else {
        panic!("expected the fetch's answer");
    };
    assert_eq!(&*room, "main");
    assert_eq!(history.epoch.as_deref(), Some(&*stored.epoch));
    assert_eq!((history.first_seq, history.last_seq), (1, 2));
    let seqs: Vec<u64> = history.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [2]);
    assert_eq!(&history.messages[0].text[..], b"from A");

    // A bad room name is refused by value, without touching the connection.
    node.broker.submit(BrokerRequest::Fetch {
        token: 10,
        room: "no good".into(),
        after_seq: 0,
        limit: 1,
    });
    assert!(matches!(
        node.next(),
        BrokerEvent::Fetched {
            token: 10,
            result: Err(BrokerFailure::Rejected(_)),
            ..
        }
    ));
    assert!(node.broker.try_recv().is_none());
    node.broker.shutdown();
}

#[test]
fn a_killed_redis_reports_down_fails_appends_and_recovers_after_a_restart() {
    let mut redis = RedisServer::start();
    let node = Node::spawn(quick_config(&redis));
    assert_eq!(node.next(), BrokerEvent::Up);
    node.append(1, "before", None);
    let (answer, _) = answer_and_message(node.take(2));
    let BrokerEvent::Appended {
        result: Ok(before), ..
    } = answer
    else {
        panic!("append failed: {answer:?}");
    };

    redis.kill();
    assert_eq!(node.next(), BrokerEvent::Down);
    let start = Instant::now();
    node.append(2, "while down", None);
    node.append(3, "while down, with an id", Some("x"));
    for token in [2, 3] {
        match node.next() {
            BrokerEvent::Appended {
                token: t,
                result: Err(BrokerFailure::Unavailable | BrokerFailure::Unknown),
            } if t == token => {}
            other => panic!("expected append {token} to fail, got {other:?}"),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    redis.restart();
    assert_eq!(node.next(), BrokerEvent::Up);
    node.append(4, "after", Some("x"));
    let (answer, message) = answer_and_message(node.take(2));
    let BrokerEvent::Appended {
        token: 4,
        result: Ok(after),
    } = answer
    else {
        panic!("append after the restart failed: {answer:?}");
    };
    // The restarted Redis is empty: a new epoch, numbering from 1.
    assert_eq!(after.seq, 1);
    assert_ne!(after.epoch, before.epoch);
    assert!(matches!(message, BrokerEvent::Message { seq: 1, .. }));
    assert!(node.broker.try_recv().is_none());
}

#[test]
fn a_frozen_redis_is_noticed_by_the_ping_and_its_thaw_by_the_reconnect() {
    let redis = RedisServer::start();
    let node = Node::spawn(quick_config(&redis));
    assert_eq!(node.next(), BrokerEvent::Up);
    redis.freeze(true);
    let down = node.next();
    redis.freeze(false);
    assert_eq!(down, BrokerEvent::Down);
    assert_eq!(node.next(), BrokerEvent::Up);
    node.append(1, "thawed", None);
    let (answer, _) = answer_and_message(node.take(2));
    assert!(
        matches!(
            answer,
            BrokerEvent::Appended {
                token: 1,
                result: Ok(_)
            }
        ),
        "{answer:?}"
    );
}

/// How many times Redis has executed `command` since it started.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[test]
fn a_quiet_healthy_feed_pings_and_stays_up() {
    let redis = RedisServer::start();
    let config = BrokerConfig {
        ping_interval: Duration::from_millis(20),
        ..quick_config(&redis)
    };
    let node = Node::spawn(config);
    assert_eq!(node.next(), BrokerEvent::Up);
    let before = calls(&redis, "ping");
    let deadline = Instant::now() + PATIENCE;
    while calls(&redis, "ping") < before + 3 {
        assert!(Instant::now() < deadline, "the feed never pinged");
        let _ = node.woken.recv_timeout(Duration::from_millis(50));
    }
    assert_eq!(
        node.broker.try_recv(),
        None,
        "a healthy feed reported a change"
    );
    node.append(1, "still fine", None);
    let (answer, _) = answer_and_message(node.take(2));
    assert!(matches!(
        answer,
        BrokerEvent::Appended { result: Ok(_), .. }
    ));
}

#[test]
fn a_broker_without_redis_starts_down_and_answers_unavailable() {
    let mut redis = RedisServer::start();
    let config = quick_config(&redis);
    redis.kill();
    let node = Node::spawn(config);
    node.append(1, "nobody home", None);
    assert_eq!(
        node.next(),
        BrokerEvent::Appended {
            token: 1,
            result: Err(BrokerFailure::Unavailable)
        }
    );
    redis.restart();
    assert_eq!(node.next(), BrokerEvent::Up);
}

#[test]
fn a_full_queue_answers_overloaded_without_blocking() {
    let redis = RedisServer::start();
    let config = BrokerConfig {
        queue: 1,
        ..quick_config(&redis)
    };
    // A frozen Redis holds the worker in its first connection attempt until the timeout: one
    // request waits in the queue, the others overflow at once.
    redis.freeze(true);
    let node = Node::spawn(config);
    for token in 0..50 {
        node.append(token, "x", None);
    }
    let events = node.take(50);
    redis.freeze(false);
    let overloaded = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                BrokerEvent::Appended {
                    result: Err(BrokerFailure::Overloaded),
                    ..
                }
            )
        })
        .count();
    assert!(overloaded >= 48, "{events:?}");
    let mut tokens: Vec<u64> = events
        .iter()
        .map(|e| match e {
            BrokerEvent::Appended {
                token,
                result: Err(_),
            } => *token,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        (0..50).collect::<Vec<_>>(),
        "each request answered once"
    );
}

#[test]
fn spawn_refuses_a_bad_url_or_prefix() {
    let bad_url = Broker::spawn("http://nope", "parlor:", 10, || {});
    assert_eq!(
        bad_url.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
    let bad_prefix = Broker::spawn("redis://127.0.0.1:1", "a{b", 10, || {});
    assert_eq!(
        bad_prefix.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
}
