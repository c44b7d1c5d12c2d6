//! Tests that need an origin instant. They were unit tests beside the code (`server.rs`,
//! `room.rs`, `rate.rs`), each reading the clock for its origin; the core never reads the clock,
//! not even in its unit tests, so they run here on the simulation harness's virtual clock,
//! through the public API.

mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use parlor_core::Config;
use sim::{get_req, publish_req, Sim};

fn metric(s: &mut Sim, name: &str) -> u64 {
    let text = s.get("/metrics").text().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn cursor_epoch(r: &sim::Resp) -> String {
    let cursor = r.header("Parlor-Cursor").expect("a cursor");
    cursor.rsplit_once('-').expect("epoch-seq").0.to_owned()
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "time went backwards")]
fn time_never_goes_backwards() {
    let mut s = Sim::default();
    let t0 = s.now;
    s.advance(Duration::from_secs(1));
    s.server.handle_timeout(t0);
}

#[test]
fn bucket_refills() {
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 2,
        ..Config::default()
    });
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let publish = |s: &mut Sim| {
        let c = s.connect_from(peer);
        s.feed(c, publish_req("r", "x"));
        let r = s.response(c);
        (r.status, r.header("Retry-After").map(str::to_owned))
    };
    assert_eq!(publish(&mut s), (200, None));
    assert_eq!(publish(&mut s), (200, None));
    assert_eq!(publish(&mut s), (429, Some("1".to_owned())));
    s.advance(Duration::from_secs(1));
    assert_eq!(publish(&mut s), (200, None));
    // A rate of 0 turns the bucket off.
    let mut off = Sim::default();
    assert!((0..100).all(|_| publish(&mut off).0 == 200));
}

#[test]
fn rooms_live_while_used_and_come_back_in_a_new_epoch() {
    let idle = Duration::from_secs(60);
    let mut s = Sim::new(Config {
        max_rooms: 2,
        room_idle: idle,
        ..Config::default()
    });
    // A new room that never gets a message is freed once its only poll leaves.
    let c = s.connect();
    s.feed(c, get_req("/subscribe?room=a"));
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    s.vanish(c);
    assert_eq!(
        metric(&mut s, "parlor_rooms"),
        0,
        "an unused new room is freed"
    );
    // Made again, it keeps the run's epoch: it never held a message.
    let r = s.publish("a", "x");
    assert_eq!(cursor_epoch(&r), s.epoch(), "it never held a message");
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    // It lives exactly `room_idle` after its last use.
    s.advance(idle - Duration::from_millis(1));
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    s.advance(Duration::from_millis(1));
    assert_eq!(metric(&mut s, "parlor_rooms"), 0);
    // A room that held messages comes back in a new epoch.
    let r = s.publish("a", "y");
    assert_eq!(
        cursor_epoch(&r),
        format!("{}1", s.epoch()),
        "a room with messages was freed"
    );
    assert_eq!(metric(&mut s, "parlor_rooms_created_total"), 3);
    assert_eq!(metric(&mut s, "parlor_rooms_evicted_total"), 2);
}
