//! A restart is never a silent gap (issue 18), against both servers: a cursor from before a
//! real restart (the server stopped with SIGTERM and started again) is answered with
//! `Parlor-Reset: 1` and `"reset":true`, at once or when its held poll is answered; a cursor of
//! the new run never carries it.
//!
//! The second run listens on a port of its own: what makes it another run is its epoch (its
//! start time), not its address.

use std::time::Duration;

use parlor_tests::{both, split_cursor, Client, Kind, Server};

both!(a_cursor_from_before_a_restart_is_answered_with_a_reset);

fn a_cursor_from_before_a_restart_is_answered_with_a_reset(kind: Kind) {
    let mut first = Server::start(kind);
    let old = first.publish("e", "old");
    let old_held = first.publish("h", "gone");
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(20)).success());

    let s = Server::start(kind);
    let new = s.publish("e", "new");
    assert_ne!(
        split_cursor(&old).0,
        split_cursor(&new).0,
        "the second run has another epoch"
    );

    // Plain: the oldest message, the reset signal, and no gap (nothing is known to be missed).
    let r = s.get(&format!("/subscribe?room=e&since={old}"));
    r.assert_status(200);
    assert_eq!(r.text(), "new");
    assert_eq!(r.header("Parlor-Reset"), Some("1"), "{r}");
    assert_eq!(r.header("Parlor-Gap"), None, "{r}");
    // JSON.
    let r = s.get(&format!("/subscribe?room=e&since={old}&format=json"));
    let v = r.json();
    assert_eq!(v["reset"], true, "{r}");
    assert_eq!(v["gap"], 0, "{r}");
    assert_eq!(v["messages"][0]["text"], "new");
    assert_eq!(r.header("Parlor-Reset"), Some("1"));
    // Last-Event-ID.
    let r = s.exchange("GET", "/subscribe?room=e", &[("Last-Event-ID", &old)], b"");
    assert_eq!((r.text(), r.header("Parlor-Reset")), ("new", Some("1")));

    // A cursor of this run never carries it.
    s.publish("e", "newer");
    let r = s.get(&format!("/subscribe?room=e&since={new}&format=json"));
    assert_eq!(r.header("Parlor-Reset"), None, "{r}");
    assert!(r.json().get("reset").is_none(), "{r}");

    // A held poll with a cursor from before the restart: its answer carries the reset too.
    let mut c = Client::connect(s.addr());
    c.send_request(
        "GET",
        &format!("/subscribe?room=h&since={old_held}&format=json"),
        &[],
        b"",
    );
    s.wait_held(1);
    s.publish("h", "after");
    let r = c.read_response();
    r.assert_status(200);
    assert_eq!(r.header("Parlor-Reset"), Some("1"), "{r}");
    assert_eq!(r.json()["reset"], true, "{r}");
    assert_eq!(r.json()["messages"][0]["text"], "after");
}
