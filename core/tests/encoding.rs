//! Exact encodings at the edges of the API: how texts are escaped in JSON answers, how form
//! bodies and query strings are decoded, and the first poll of a room that has no history yet.
//! Written for mutants that the scenario tests let through (docs/TESTING.md).

mod sim;

use sim::{get_req, Sim};

fn post(ct: &str, body: &str) -> String {
    format!(
        "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn json_answers_escape_every_control_character_exactly() {
    let mut s = Sim::default();
    let text = "a\rb\tc\nd\"e\\f<g\u{1}h\u{1f}i\u{7f}j\u{e9}";
    assert_eq!(s.request(&post("text/plain", text)).1.status, 200);
    let r = s.get("/subscribe?room=r&since=0&format=json");
    let e = s.epoch();
    assert_eq!(
        r.text(),
        format!(
            "{{\"room\":\"r\",\"messages\":[{{\"cursor\":\"{e}-1\",\"time\":{},\
             \"text\":\"a\\rb\\tc\\nd\\\"e\\\\f\\u003cg\\u0001h\\u001fi\\u007fj\u{e9}\"}}],\
             \"next\":\"{e}-1\",\"gap\":0}}",
            sim::EPOCH_MS
        )
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["messages"][0]["text"], text, "it decodes to the text");
}

#[test]
fn a_form_body_without_a_field_is_the_message() {
    // `curl -d 'hello+there%21'`: a form with no `=` is the text itself, percent-decoded.
    let mut s = Sim::default();
    let (_, r) = s.request(&post("application/x-www-form-urlencoded", "hello+there%21"));
    assert_eq!(r.status, 200);
    assert_eq!(s.get("/subscribe?room=r&since=0").text(), "hello there!");
    let (_, r) = s.request(&post("application/x-www-form-urlencoded", "bad%zz"));
    assert_eq!(
        (r.status, r.text()),
        (400, "form body is not valid UTF-8 or percent-encoding\n")
    );
    // With an `=` it is a form: the message is its field.
    let (_, r) = s.request(&post("application/x-www-form-urlencoded", "a=b"));
    assert_eq!((r.status, r.text()), (400, "missing message field\n"));
}

#[test]
fn a_broken_percent_encoding_in_a_query_key_is_400() {
    let mut s = Sim::default();
    s.publish("r", "x");
    // The key `%` is a broken escape: the query cannot be read, whatever comes after it.
    for target in ["/subscribe?%=1&room=r&since=0", "/subscribe?%2=1&since=0"] {
        let r = s.get(target);
        assert_eq!((r.status, r.text()), (400, "invalid cursor\n"), "{target}");
    }
    // An encoded key is decoded before it is compared.
    let r = s.get("/subscribe?%72oom=r&s%69nce=0");
    assert_eq!((r.status, r.text()), (200, "x"));
    // A key of only `+` (a space) matches nothing.
    let r = s.get("/subscribe?+=1&room=r&since=0");
    assert_eq!((r.status, r.text()), (200, "x"));
}

#[test]
fn a_cursor_of_another_epoch_waits_in_a_room_without_history() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, get_req("/subscribe?room=new&since=zz-5"));
    assert!(s.received(c).is_empty(), "nothing to miss, nothing to send");
    assert_eq!(s.server.held_count(), 1);
    s.publish("new", "first");
    let r = s.response(c);
    assert_eq!((r.status, r.text()), (200, "first"));
    assert_eq!(r.header("Parlor-Gap"), None);
    assert_eq!(r.header("Parlor-Cursor"), Some(s.cursor(1).as_str()));
}

#[test]
fn a_cursor_of_another_epoch_must_still_be_well_formed() {
    let mut s = Sim::default();
    s.publish("r", "x");
    // Well formed: answered from the oldest retained message.
    assert_eq!(s.get("/subscribe?room=r&since=zz-7").text(), "x");
    let longest = format!("zz-{}", "9".repeat(19));
    assert_eq!(
        s.get(&format!("/subscribe?room=r&since={longest}")).text(),
        "x"
    );
    // A sequence that is not a number of at most 19 digits is not a cursor, whatever its epoch.
    let too_long = format!("zz-{}", "1".repeat(20));
    for bad in ["zz-x", "zz-1a", "zz-", too_long.as_str()] {
        let r = s.get(&format!("/subscribe?room=r&since={bad}"));
        assert_eq!((r.status, r.text()), (400, "invalid cursor\n"), "{bad}");
    }
}
