//! `RedisLog` against a real `redis-server`: sequence numbers, epochs, fetch, trimming,
//! idempotency across connections, data loss, and a dead or frozen Redis.

use std::time::{Duration, Instant};

use bytes::Bytes;
use parlor_core::broker::{Entry, History, Stored};
use parlor_os::redis_log::{LogError, RedisLog};
use parlor_os::testkit_redis::RedisServer;

const PREFIX: &str = "parlor:";

fn log(redis: &RedisServer) -> RedisLog {
    RedisLog::connect(&redis.url(), PREFIX).expect("connect to the test redis")
}

fn append(log: &mut RedisLog, room: &str, text: &str, id: Option<&str>, time: u64) -> Stored {
    log.append(room, text.as_bytes(), id, time, 100)
        .expect("append")
}

fn redis_cmd(redis: &RedisServer, name: &str) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: redis::Value = redis::cmd(name).query(&mut conn).unwrap();
}

fn valid_epoch(e: &str) -> bool {
    (1..=16).contains(&e.len())
        && e.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[test]
fn appends_number_one_two_three_in_one_epoch() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    let stored: Vec<Stored> = (1..=3)
        .map(|i| append(&mut log, "main", &format!("m{i}"), None, 1000 + i))
        .collect();
    let epoch = stored[0].epoch.clone();
    assert!(
        valid_epoch(&epoch),
        "epoch {epoch:?} breaks the cursor syntax"
    );
    for (i, s) in stored.iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(
            *s,
            Stored {
                epoch: epoch.clone(),
                seq: i,
                time_ms: 1000 + i,
                duplicate: false
            }
        );
    }
    // Another room has its own sequence (and epoch).
    let other = append(&mut log, "other-room_2", "x", None, 5);
    assert_eq!(other.seq, 1);
    assert!(valid_epoch(&other.epoch));
}

#[test]
fn fetch_returns_what_follows_a_sequence_in_order() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    for i in 1..=5u64 {
        let id = format!("id{i}");
        let id = (i % 2 == 0).then_some(id.as_str());
        append(&mut log, "doc", &format!("text {i}"), id, 100 * i);
    }
    let epoch = log.fetch("doc", 0, 0).unwrap().epoch.unwrap();
    let entry = |i: u64| Entry {
        seq: i,
        time_ms: 100 * i,
        text: Bytes::from(format!("text {i}")),
        id: (i % 2 == 0).then(|| format!("id{i}").into()),
    };
    assert_eq!(
        log.fetch("doc", 2, 10).unwrap(),
        History {
            epoch: Some(epoch.clone()),
            first_seq: 1,
            last_seq: 5,
            messages: vec![entry(3), entry(4), entry(5)],
        }
    );
    assert_eq!(
        log.fetch("doc", 0, 2).unwrap().messages,
        vec![entry(1), entry(2)]
    );
    let head = log.fetch("doc", 0, 0).unwrap();
    assert_eq!((head.first_seq, head.last_seq), (1, 5));
    assert!(head.messages.is_empty());
    assert!(log.fetch("doc", 5, 10).unwrap().messages.is_empty());
    assert!(log.fetch("doc", u64::MAX, 10).unwrap().messages.is_empty());
    assert_eq!(log.fetch("doc", 0, usize::MAX).unwrap().messages.len(), 5);
    // A room Redis knows nothing of.
    assert_eq!(
        log.fetch("never", 3, 10).unwrap(),
        History {
            epoch: None,
            first_seq: 1,
            last_seq: 0,
            messages: vec![],
        }
    );
}

#[test]
fn texts_and_ids_are_values_whatever_their_bytes() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    let nasty = b"'); redis.call('FLUSHALL') --\0,3:x,\xff\r\n$-1\r\n".to_vec();
    let big = vec![b'z'; 64 * 1024];
    let id = "idé \" ]] KEYS[1]";
    let a = log.append("main", &nasty, Some(id), 1, 100).unwrap();
    let b = log.append("main", &big, None, 2, 100).unwrap();
    let got = log.fetch("main", 0, 10).unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(got.messages[0].text, Bytes::from(nasty));
    assert_eq!(got.messages[0].id.as_deref(), Some(id));
    assert_eq!(got.messages[1].text, Bytes::from(big));
    // Invalid room names never reach Redis.
    for room in ["", "a b", "a}b", "{x}", &"r".repeat(65)] {
        assert!(matches!(
            log.append(room, b"x", None, 1, 10),
            Err(LogError::Invalid(_))
        ));
        assert!(matches!(log.fetch(room, 0, 1), Err(LogError::Invalid(_))));
    }
    assert!(matches!(
        RedisLog::connect(&redis.url(), "bad{prefix"),
        Err(LogError::Invalid(_))
    ));
}

#[test]
fn maxlen_trims_and_fetch_reports_the_first_retained_sequence() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    let history = 10;
    let total = 350u64;
    for i in 1..=total {
        log.append("busy", format!("{i}").as_bytes(), None, i, history)
            .unwrap();
    }
    let all = log.fetch("busy", 0, 10_000).unwrap();
    assert_eq!(all.last_seq, total);
    assert!(all.first_seq > 1, "nothing was trimmed");
    assert!(
        all.first_seq <= total + 1 - history as u64,
        "fewer than {history} kept: first retained {}",
        all.first_seq
    );
    let seqs: Vec<u64> = all.messages.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (all.first_seq..=total).collect();
    assert_eq!(seqs, expected, "retained messages must be contiguous");
    // A fetch from before the first retained message starts there (the caller sees the gap).
    let from_one = log.fetch("busy", 1, 3).unwrap();
    assert_eq!(from_one.messages[0].seq, all.first_seq);
    assert_eq!(from_one.first_seq, all.first_seq);
}

#[test]
fn a_repeated_id_from_another_connection_returns_the_original_cursor() {
    let redis = RedisServer::start();
    let (mut node_a, mut node_b) = (log(&redis), log(&redis));
    let first = append(&mut node_a, "main", "hello", Some("k1"), 111);
    append(&mut node_b, "main", "between", None, 222);
    let again = append(&mut node_b, "main", "hello, twice", Some("k1"), 333);
    assert_eq!(
        again,
        Stored {
            duplicate: true,
            ..first.clone()
        }
    );
    assert_eq!((again.seq, again.time_ms), (1, 111));
    let got = node_a.fetch("main", 0, 10).unwrap();
    assert_eq!(got.last_seq, 2, "the duplicate appended something");
    assert_eq!(got.messages.len(), 2);
    // The same id in another room is another message.
    assert_eq!(append(&mut node_b, "elsewhere", "x", Some("k1"), 1).seq, 1);
}

#[test]
fn two_nodes_racing_with_one_id_publish_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    for round in 0..20 {
        let id = format!("race{round}");
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (url, id) = (url.clone(), id.clone());
                std::thread::spawn(move || {
                    let mut log = RedisLog::connect(&url, PREFIX).unwrap();
                    log.append("race", b"x", Some(&id), 1, 100).unwrap()
                })
            })
            .collect();
        let results: Vec<Stored> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results[0].seq, results[1].seq);
        assert_eq!(
            results.iter().filter(|s| s.duplicate).count(),
            1,
            "{results:?}"
        );
    }
    assert_eq!(log(&redis).fetch("race", 0, 0).unwrap().last_seq, 20);
}

#[test]
fn an_id_is_forgotten_once_its_message_is_trimmed() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    log.append("r", b"first", Some("old"), 1, 10).unwrap();
    for i in 0..300 {
        log.append("r", b"x", Some(&format!("n{i}")), 1, 10)
            .unwrap();
    }
    let head = log.fetch("r", 0, 0).unwrap();
    assert!(head.first_seq > 1);
    let again = log.append("r", b"first again", Some("old"), 2, 10).unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.seq, 302);
    // Ids are trimmed with the stream: the set never holds more than the stream.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let ids: u64 = redis::cmd("ZCARD")
        .arg("parlor:room:{r}:ids")
        .query(&mut conn)
        .unwrap();
    let entries: u64 = redis::cmd("XLEN")
        .arg("parlor:room:{r}:log")
        .query(&mut conn)
        .unwrap();
    assert!(ids <= entries, "{ids} ids for {entries} entries");
}

#[test]
fn a_room_ttl_is_renewed_on_every_key_by_each_append() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut ttls = |room: &str| -> Vec<i64> {
        ["meta", "log", "ids"]
            .iter()
            .map(|k| {
                redis::cmd("TTL")
                    .arg(format!("parlor:room:{{{room}}}:{k}"))
                    .query(&mut conn)
                    .unwrap()
            })
            .collect()
    };
    append(&mut log, "kept", "x", Some("a"), 1);
    assert_eq!(ttls("kept"), [-1, -1, -1], "no expiry by default");
    log.set_room_ttl(Some(Duration::from_millis(59_001)));
    append(&mut log, "brief", "x", Some("a"), 1);
    for ttl in ttls("brief") {
        assert!((55..=60).contains(&ttl), "ttl {ttl}");
    }
    append(&mut log, "kept", "y", None, 2);
    assert!(ttls("kept").iter().all(|t| (55..=60).contains(t)));
}

#[test]
fn a_flush_gives_the_room_a_new_epoch_and_restarts_at_one() {
    let redis = RedisServer::start();
    let mut log = log(&redis);
    let before = append(&mut log, "main", "a", Some("k"), 1);
    append(&mut log, "main", "b", None, 2);
    redis_cmd(&redis, "FLUSHALL");
    assert_eq!(log.fetch("main", 0, 10).unwrap().epoch, None);
    let after = append(&mut log, "main", "c", Some("k"), 3);
    assert_eq!(after.seq, 1);
    assert!(!after.duplicate);
    assert_ne!(after.epoch, before.epoch);
    // Flushing and recreating immediately, many times: never the same epoch twice.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        redis_cmd(&redis, "FLUSHALL");
        assert!(seen.insert(append(&mut log, "main", "x", None, 1).epoch));
    }
}

#[test]
fn a_killed_redis_fails_appends_at_once() {
    let mut redis = RedisServer::start();
    let mut log = log(&redis);
    append(&mut log, "main", "a", None, 1);
    redis.kill();
    let start = Instant::now();
    let err = log.append("main", b"b", None, 2, 100).unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    let err = log.fetch("main", 0, 10).unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    let err = RedisLog::connect(&redis.url(), PREFIX)
        .err()
        .expect("no redis");
    assert!(err.is_connection_error(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_frozen_redis_fails_appends_after_the_timeout() {
    let redis = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let mut log = RedisLog::connect_timeout(&redis.url(), PREFIX, timeout).unwrap();
    append(&mut log, "main", "a", None, 1);
    redis.freeze(true);
    let start = Instant::now();
    let append_err = log.append("main", b"b", None, 2, 100).unwrap_err();
    let connect_err = RedisLog::connect_timeout(&redis.url(), PREFIX, timeout).err();
    let elapsed = start.elapsed();
    redis.freeze(false);
    assert!(append_err.is_connection_error(), "{append_err}");
    assert!(connect_err.is_some_and(|e| e.is_connection_error()));
    assert!(elapsed < Duration::from_secs(3), "blocked for {elapsed:?}");
}
