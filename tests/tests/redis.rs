//! Scale-out: several nodes (both binaries among them) sharing rooms through one real
//! `redis-server`, started by the test on a free loopback port without persistence.

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use parlor_os::testkit_redis::RedisServer;
use parlor_tests::server::Server;
use parlor_tests::{eventually, split_cursor, Kind};

/// A node of the cluster on `redis`, once its shared log is up.
fn node(kind: Kind, redis: &RedisServer, prefix: &str) -> Server {
    let url = redis.url();
    let node = Server::with_args(kind, &["--redis", &url, "--redis-prefix", prefix]);
    wait_healthy(&node);
    node
}

fn wait_healthy(node: &Server) {
    eventually(Duration::from_secs(15), "/healthz 200", || {
        (node.get("/healthz").status == 200).then_some(())
    });
}

/// Polls `node` with `cursor` in JSON until a batch comes (or 10 tries of a short timeout):
/// the texts and the next cursor.
fn poll(node: &Server, room: &str, cursor: &str) -> Option<(Vec<String>, String)> {
    let r = node.get(&format!(
        "/subscribe?room={room}&since={cursor}&format=json"
    ));
    match r.status {
        200 => {
            let json = r.json();
            assert_eq!(json["gap"], 0, "nothing is ever missed: {}", r.text());
            let texts = json["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_string())
                .collect();
            Some((texts, json["next"].as_str().unwrap().to_string()))
        }
        204 | 503 => None,
        s => panic!("poll on {}: {s} {}", node.kind().name(), r.text()),
    }
}

/// Publishes, retrying a `503` (the log is away) with the same id, as a client should.
fn publish_once(node: &Server, room: &str, text: &str) -> String {
    let body = format!(r#"{{"message":"{text}","id":"{text}"}}"#);
    for _ in 0..100 {
        let r = node.exchange(
            "POST",
            &format!("/publish?room={room}"),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        match r.status {
            200 => return r.cursor(),
            503 => {
                assert!(r.header("Retry-After").is_some());
                thread::sleep(Duration::from_millis(100));
            }
            s => panic!("publish {text}: {s} {}", r.text()),
        }
    }
    panic!("publish {text} never stored");
}

#[test]
fn a_poll_on_one_node_is_woken_by_a_publish_on_another() {
    let redis = RedisServer::start();
    let a = node(Kind::Mio, &redis, "t1:");
    let b = node(Kind::Smol, &redis, "t1:");
    for (from, to) in [(&a, &b), (&b, &a)] {
        let mut poll = to.client();
        poll.send_request("GET", "/subscribe?room=lobby", &[], b"");
        to.wait_held(1);
        let cursor = from.publish("lobby", &format!("from {}", from.kind().name()));
        let r = poll.read_response();
        r.assert_status(200);
        assert_eq!(r.text(), format!("from {}", from.kind().name()));
        assert_eq!(r.cursor(), cursor, "one cursor space on every node");
    }
}

#[test]
fn round_robin_over_three_nodes_sees_every_message_once_in_order() {
    let redis = RedisServer::start();
    let nodes = [
        node(Kind::Mio, &redis, "t2:"),
        node(Kind::Smol, &redis, "t2:"),
        node(Kind::Mio, &redis, "t2:"),
    ];
    let per_publisher = 40;
    let seen = thread::scope(|s| {
        for p in 0..4 {
            let target = &nodes[p % 3];
            s.spawn(move || {
                for i in 0..per_publisher {
                    publish_once(target, "rr", &format!("p{p}-{i}"));
                }
            });
        }
        let mut cursor = "0".to_string();
        let mut seen = Vec::new();
        let mut turn = 0;
        while seen.len() < 4 * per_publisher {
            turn += 1;
            assert!(turn < 2000, "only {} messages seen", seen.len());
            if let Some((texts, next)) = poll(&nodes[turn % 3], "rr", &cursor) {
                seen.extend(texts);
                cursor = next;
            }
        }
        seen
    });
    assert_in_order(&seen, 4, per_publisher);
}

/// Every message of `publishers` × `each` exactly once, each publisher's in its order.
fn assert_in_order(seen: &[String], publishers: usize, each: usize) {
    let expected: Vec<(String, usize)> = (0..publishers).map(|p| (format!("p{p}"), each)).collect();
    assert_counts(seen, &expected);
}

/// Every message `pN-i` for `i < count` of each `(pN, count)` exactly once, each publisher's in
/// its order, and nothing else.
fn assert_counts(seen: &[String], expected: &[(String, usize)]) {
    let mut next: HashMap<String, usize> = HashMap::new();
    for text in seen {
        let (p, i) = text.split_once('-').unwrap();
        let i: usize = i.parse().unwrap();
        let expected = next.entry(p.to_string()).or_insert(0);
        assert_eq!(
            i, *expected,
            "{p}: got {i}, expected {expected} (seen {seen:?})"
        );
        *expected += 1;
    }
    let expected: HashMap<String, usize> = expected.iter().cloned().collect();
    assert_eq!(next, expected, "{seen:?}");
}

#[test]
fn a_node_killed_and_restarted_loses_nothing_for_cursor_clients() {
    let redis = RedisServer::start();
    let a = node(Kind::Smol, &redis, "t3:");
    let mut b = Some(node(Kind::Mio, &redis, "t3:"));
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for i in 0..30 {
        if i == 10 {
            drop(b.take()); // SIGKILL
        }
        if i == 20 {
            b = Some(node(Kind::Mio, &redis, "t3:"));
        }
        publish_once(&a, "k", &format!("p0-{i}"));
        let target = match &b {
            Some(b) if i % 2 == 1 => b,
            _ => &a,
        };
        if let Some((texts, next)) = poll(target, "k", &cursor) {
            seen.extend(texts);
            cursor = next;
        }
    }
    let b = b.unwrap();
    while seen.len() < 30 {
        let (texts, next) = poll(&b, "k", &cursor).expect("the rest, from the restarted node");
        seen.extend(texts);
        cursor = next;
    }
    assert_in_order(&seen, 1, 30);
}

#[test]
fn redis_stopped_for_a_while_turns_publishes_503_and_loses_nothing() {
    let redis = RedisServer::start();
    let a = node(Kind::Mio, &redis, "t4:");
    let b = node(Kind::Smol, &redis, "t4:");
    for i in 0..5 {
        publish_once(&a, "s", &format!("p0-{i}"));
    }
    let (first, cursor) = poll(&b, "s", "0").unwrap();
    assert_eq!(first.len(), 5);
    redis.freeze(true);
    // Sent while Redis hangs: 503, and maybe stored once it wakes (so retried with its id).
    for (n, text) in [(&a, "p8-0"), (&b, "p9-0")] {
        let body = format!(r#"{{"message":"{text}","id":"{text}"}}"#);
        let ct = [("Content-Type", "application/json")];
        let r = n.exchange("POST", "/publish?room=s", &ct, body.as_bytes());
        r.assert_status(503);
        assert!(r.header("Retry-After").is_some());
        assert_eq!(n.get("/healthz").status, 503);
        let up = n
            .metrics()
            .into_iter()
            .find(|s| s.name == "parlor_broker_up")
            .expect("parlor_broker_up in /metrics");
        assert_eq!(up.value, 0.0);
    }
    redis.freeze(false);
    wait_healthy(&a);
    wait_healthy(&b);
    publish_once(&a, "s", "p8-0");
    publish_once(&b, "s", "p9-0");
    for i in 5..10 {
        publish_once(&b, "s", &format!("p0-{i}"));
    }
    let mut seen = first;
    let mut cursor = cursor;
    let mut turn = 0;
    while seen.len() < 12 {
        turn += 1;
        assert!(turn < 50, "only {seen:?}");
        let n = if turn % 2 == 0 { &a } else { &b };
        if let Some((texts, next)) = poll(n, "s", &cursor) {
            seen.extend(texts);
            cursor = next;
        }
    }
    let expected = [("p0".into(), 10), ("p8".into(), 1), ("p9".into(), 1)];
    assert_counts(&seen, &expected);
}

#[test]
fn redis_losing_its_data_is_never_a_silent_skip() {
    let mut redis = RedisServer::start();
    let a = node(Kind::Smol, &redis, "t5:");
    let b = node(Kind::Mio, &redis, "t5:");
    let old = a.publish("f", "before");
    redis.restart(); // empty: no persistence
    wait_healthy(&a);
    wait_healthy(&b);
    eventually(
        Duration::from_secs(15),
        "a publish after the restart",
        || {
            let r = b.exchange("POST", "/publish?room=f", &[], b"after");
            (r.status == 200).then_some(())
        },
    );
    for n in [&a, &b] {
        let r = n.get(&format!("/subscribe?room=f&since={old}"));
        r.assert_status(200);
        assert_eq!(r.text(), "after");
        assert_eq!(r.header("Parlor-Reset"), Some("1"), "the reset signal");
        let (old_epoch, _) = split_cursor(&old);
        let (new_epoch, _) = split_cursor(r.must_header("Parlor-Cursor"));
        assert_ne!(old_epoch, new_epoch, "the old cursor is told apart");
    }
}

#[test]
fn one_publish_id_sent_to_two_nodes_is_one_message() {
    let redis = RedisServer::start();
    let a = node(Kind::Mio, &redis, "t6:");
    let b = node(Kind::Smol, &redis, "t6:");
    let body = br#"{"message":"hello","id":"same-id"}"#;
    let ct = [("Content-Type", "application/json")];
    let first = a.exchange("POST", "/publish?room=d", &ct, body);
    let second = b.exchange("POST", "/publish?room=d", &ct, body);
    first.assert_status(200);
    second.assert_status(200);
    assert_eq!(first.cursor(), second.cursor());
    let (texts, _) = poll(&b, "d", "0").unwrap();
    assert_eq!(texts, ["hello"]);
}

#[test]
fn an_event_stream_on_one_node_gets_what_another_node_publishes() {
    use std::io::{Read, Write};
    let redis = RedisServer::start();
    let a = node(Kind::Mio, &redis, "t7:");
    let b = node(Kind::Smol, &redis, "t7:");
    let first = a.publish("ev", "one");
    let mut stream = std::net::TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let head = format!(
        "GET /events?room=ev&since={first} HTTP/1.1\r\nHost: {}\r\n\r\n",
        b.host()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut got = String::new();
    let read_until = |got: &mut String, stream: &mut std::net::TcpStream, want: &str| {
        eventually(Duration::from_secs(10), want, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = stream.read(&mut buf) {
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            got.contains(want).then_some(())
        });
    };
    read_until(&mut got, &mut stream, "event: ready");
    let second = a.publish("ev", "two");
    read_until(&mut got, &mut stream, "data: two\n");
    assert!(got.contains(&format!("id: {second}\ndata: two\n")), "{got}");
    assert!(!got.contains("data: one\n"), "{got}");
}
