//! Unit tests of the Redis log that need no Redis: name rules, keys, the feed payload, failures,
//! the backoff. (With a Redis: `adapters/os/tests/redis_log.rs`, `redis_broker.rs`.)

use std::io;
use std::time::Duration;

use bytes::Bytes;
use parlor_core::broker::{BrokerEvent, BrokerFailure};
use redis::{ErrorKind, RedisError};

use super::script::Keys;
use super::service::Backoff;
use super::*;

#[test]
fn room_and_prefix_rules() {
    assert!(valid_room("main") && valid_room("A-b_9") && valid_room(&"a".repeat(64)));
    assert!(!valid_room("") && !valid_room(&"a".repeat(65)) && !valid_room("a}b"));
    assert!(!valid_room("a b") && !valid_room("é") && !valid_room("a:b"));
    assert!(valid_prefix("parlor:") && valid_prefix("") && valid_prefix("app/1:"));
    assert!(!valid_prefix("a{b") && !valid_prefix("a}") && !valid_prefix("a b"));
    assert!(!valid_prefix(&"p".repeat(65)) && !valid_prefix("a\nb"));
}

#[test]
fn key_layout() {
    let keys = Keys::new("parlor:").unwrap();
    assert_eq!(&*keys.channel, "parlor:events");
    assert_eq!(
        keys.room("main").unwrap(),
        [
            "parlor:room:{main}:meta".to_string(),
            "parlor:room:{main}:log".to_string(),
            "parlor:room:{main}:ids".to_string(),
        ]
    );
    assert!(matches!(keys.room("a}b"), Err(LogError::Invalid(_))));
    assert!(matches!(Keys::new("x{"), Err(LogError::Invalid(_))));
}

#[test]
fn event_round_trip_with_awkward_bytes() {
    let text = b"a,b:c\0\xff 10:x, parlor1,";
    let payload = encode_event("r-1", "abc12", 42, 1_700_000_000_123, Some("i:d,"), text);
    assert_eq!(
        decode_event(&payload),
        Some(BrokerEvent::Message {
            room: "r-1".into(),
            epoch: "abc12".into(),
            seq: 42,
            time_ms: 1_700_000_000_123,
            text: Bytes::from_static(text),
            id: Some("i:d,".into()),
        })
    );
    let none = encode_event("main", "z", 1, 0, None, b"");
    assert!(matches!(
        decode_event(&none),
        Some(BrokerEvent::Message { id: None, .. })
    ));
}

#[test]
fn malformed_events_are_dropped() {
    let good = encode_event("main", "k0", 7, 9, Some("x"), b"hello");
    // Every truncation, and every single-byte corruption, decodes to nothing or to a
    // well-formed message: never a panic.
    for cut in 0..good.len() {
        assert_eq!(decode_event(&good[..cut]), None, "cut at {cut}");
    }
    for i in 0..good.len() {
        for b in [b'0', b'9', b':', b',', b'{', 0xff] {
            let mut bad = good.clone();
            bad[i] = b;
            let _ = decode_event(&bad);
        }
    }
    let mut trailing = good.clone();
    trailing.push(b'x');
    assert_eq!(decode_event(&trailing), None);
    for bad in [
        encode_event("a b", "k0", 1, 1, None, b"x"),
        encode_event("main", "K0", 1, 1, None, b"x"),
        encode_event("main", "", 1, 1, None, b"x"),
        b"parlor1,99999999999999999999:".to_vec(),
        b"parlor2,4:main,2:k0,1:1,1:1,1:-,1:x,".to_vec(),
        b"parlor1,4:main,2:k0,1:1,1:1,1:?,1:x,".to_vec(),
        b"parlor1,4:main,2:k0,2:-1,1:1,1:-,1:x,".to_vec(),
    ] {
        assert_eq!(
            decode_event(&bad),
            None,
            "{:?}",
            String::from_utf8_lossy(&bad)
        );
    }
}

#[test]
fn backoff_grows_to_its_cap_with_jitter() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
    let delays: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
    for (d, base) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
        let base = Duration::from_millis(base);
        assert!(
            *d >= base * 3 / 4 && *d <= base * 5 / 4,
            "{d:?} for {base:?}"
        );
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(125));
}

#[test]
fn failures_by_fault() {
    let refused = LogError::Redis(RedisError::from(io::Error::from(
        io::ErrorKind::ConnectionRefused,
    )));
    assert_eq!(refused.failure(), BrokerFailure::Unavailable);
    let timeout = LogError::Redis(RedisError::from(io::Error::from(io::ErrorKind::TimedOut)));
    assert!(timeout.is_connection_error());
    assert_eq!(timeout.failure(), BrokerFailure::Unknown);
    let refusal = LogError::Redis(RedisError::from((ErrorKind::ResponseError, "OOM")));
    assert!(!refusal.is_connection_error());
    assert!(matches!(refusal.failure(), BrokerFailure::Rejected(_)));
    assert!(matches!(
        LogError::Invalid("invalid room name").failure(),
        BrokerFailure::Rejected(_)
    ));
}
