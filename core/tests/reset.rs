//! The reset signal (issue 18): a cursor of another epoch points into a history that is gone,
//! and the answer says so (`Parlor-Reset: 1`, `"reset":true`), now or when a held poll is
//! answered; a cursor of the room's current epoch never carries it.

mod sim;

use std::time::Duration;

use parlor_core::Config;
use sim::{get_req, Sim};

/// A cursor of an epoch no simulated server has.
const OLD: &str = "zzzz-5";

fn reset_of(r: &sim::Resp) -> Option<&str> {
    r.header("Parlor-Reset")
}

#[test]
fn another_epoch_is_answered_with_the_reset_signal_in_both_forms() {
    let mut s = Sim::default();
    s.publish("r", "m1");
    s.publish("r", "m2");
    let plain = s.get(&format!("/subscribe?room=r&since={OLD}"));
    assert_eq!((plain.status, plain.text()), (200, "m1"));
    assert_eq!(reset_of(&plain), Some("1"));
    assert_eq!(
        plain.header("Parlor-Gap"),
        None,
        "nothing is known to be missed"
    );
    let json = s.get(&format!("/subscribe?room=r&since={OLD}&format=json"));
    assert_eq!(reset_of(&json), Some("1"));
    assert!(
        json.text().ends_with(&format!(
            "\"next\":\"{}\",\"gap\":0,\"reset\":true}}",
            s.cursor(2)
        )),
        "{}",
        json.text()
    );
}

#[test]
fn last_event_id_of_another_epoch_is_a_reset_too() {
    let mut s = Sim::default();
    s.publish("r", "m1");
    let (_, r) = s.request(&format!(
        "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {OLD}\r\n\r\n"
    ));
    assert_eq!((r.text(), reset_of(&r)), ("m1", Some("1")));
    let (_, r) = s.request(&format!(
        "GET /subscribe?room=r&format=json HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {OLD}\r\n\r\n"
    ));
    assert!(r.text().contains("\"reset\":true"), "{}", r.text());
    // The current epoch's Last-Event-ID is no reset.
    s.publish("r", "m2");
    let (_, r) = s.request(&format!(
        "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {}\r\n\r\n",
        s.cursor(1)
    ));
    assert_eq!((r.text(), reset_of(&r)), ("m2", None));
}

#[test]
fn a_cursor_of_the_current_epoch_never_carries_it() {
    let mut s = Sim::new(Config {
        history_messages: 2,
        ..Config::default()
    });
    for i in 1..=4 {
        s.publish("r", &format!("m{i}"));
    }
    for target in [
        format!("/subscribe?room=r&since={}", s.cursor(1)),
        format!("/subscribe?room=r&since={}&format=json", s.cursor(1)),
        format!("/subscribe?room=r&since={}-0", s.epoch()),
        "/subscribe?room=r&since=0".to_owned(),
        "/subscribe?room=r&since=0&format=json".to_owned(),
    ] {
        let r = s.get(&target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(reset_of(&r), None, "{target}");
        assert!(!r.text().contains("reset"), "{target}: {}", r.text());
    }
    // Eviction is a gap with a count, not a reset.
    let r = s.get(&format!("/subscribe?room=r&since={}", s.cursor(1)));
    assert_eq!((r.header("Parlor-Gap"), reset_of(&r)), (Some("1"), None));
    // Another epoch after evictions: the reset, and the evicted messages of this epoch are a
    // gap that is known.
    let r = s.get(&format!("/subscribe?room=r&since={OLD}&format=json"));
    assert_eq!(
        (r.header("Parlor-Gap"), reset_of(&r)),
        (Some("2"), Some("1"))
    );
    assert!(
        r.text().ends_with("\"gap\":2,\"reset\":true}"),
        "{}",
        r.text()
    );
}

#[test]
fn held_polls_of_another_epoch_are_answered_with_the_reset_signal() {
    let mut s = Sim::default();
    let old_plain = s.connect();
    let old_json = s.connect();
    let current = s.connect();
    let current_json = s.connect();
    s.feed(
        old_plain,
        get_req(&format!("/subscribe?room=e&since={OLD}")),
    );
    s.feed(
        old_json,
        get_req(&format!("/subscribe?room=e&since={OLD}&format=json")),
    );
    s.feed(current, get_req("/subscribe?room=e"));
    s.feed(
        current_json,
        get_req("/subscribe?room=e&since=0&format=json"),
    );
    assert_eq!(s.server.held_count(), 4, "an empty room holds every poll");
    s.publish("e", "first");
    let r = s.response(old_plain);
    assert_eq!((r.text(), reset_of(&r)), ("first", Some("1")));
    let r = s.response(old_json);
    assert_eq!(reset_of(&r), Some("1"));
    assert!(
        r.text().ends_with("\"gap\":0,\"reset\":true}"),
        "{}",
        r.text()
    );
    let r = s.response(current);
    assert_eq!((r.text(), reset_of(&r)), ("first", None));
    let r = s.response(current_json);
    assert_eq!(reset_of(&r), None);
    assert!(!r.text().contains("reset"), "{}", r.text());
}

#[test]
fn a_held_poll_of_another_epoch_that_times_out_still_says_so() {
    let mut s = Sim::new(Config {
        poll_timeout: Duration::from_secs(25),
        ..Config::default()
    });
    let c = s.connect();
    s.feed(c, get_req(&format!("/subscribe?room=e&since={OLD}")));
    let other = s.connect();
    s.feed(
        other,
        get_req(&format!("/subscribe?room=e&since={}-0", s.epoch())),
    );
    s.advance(Duration::from_secs(26));
    let r = s.response(c);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Parlor-Cursor"), Some(s.cursor(0).as_str()));
    assert_eq!(reset_of(&r), Some("1"));
    let r = s.response(other);
    assert_eq!((r.status, reset_of(&r)), (204, None));
}

#[test]
fn cross_origin_pages_may_read_the_reset_header() {
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        ..Config::default()
    });
    s.publish("r", "m1");
    let (_, r) = s.request(&format!(
        "GET /subscribe?room=r&since={OLD} HTTP/1.1\r\nHost: h\r\nOrigin: https://ok.example\r\n\r\n"
    ));
    assert_eq!(reset_of(&r), Some("1"));
    let exposed = r.header("Access-Control-Expose-Headers").unwrap();
    assert!(
        exposed.split(", ").any(|h| h == "Parlor-Reset"),
        "{exposed}"
    );
}
