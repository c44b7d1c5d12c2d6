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
    // `curl -d 'hello+there%21'`: a body that is not a form with a `message` (or `id`) field is
    // the text exactly as sent, not decoded.
    let mut s = Sim::default();
    for text in ["hello+there%21", "bad%zz", "a=b"] {
        let (_, r) = s.request(&post("application/x-www-form-urlencoded", text));
        assert_eq!(r.status, 200, "{text}");
        assert_eq!(s.get("/subscribe?room=r&since=0&format=json").status, 200);
    }
    let r = s.get("/subscribe?room=r&since=0&format=json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let texts: Vec<_> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["hello+there%21", "bad%zz", "a=b"]);
    // A real form is decoded: its `message` field is the text.
    let (_, r) = s.request(&post(
        "application/x-www-form-urlencoded",
        "message=hello+there%21",
    ));
    assert_eq!(r.status, 200);
    let r = s.get(&format!("/subscribe?room=r&since={}-3", s.epoch()));
    assert_eq!(r.text(), "hello there!");
    let (_, r) = s.request(&post("application/x-www-form-urlencoded", "message=bad%zz"));
    assert_eq!(
        (r.status, r.text()),
        (400, "form field is not valid UTF-8 or percent-encoding\n")
    );
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

#[test]
fn every_status_line_has_its_reason_phrase() {
    use parlor_core::Config;
    use std::time::Duration;
    let mut s = Sim::new(Config {
        allow_origins: vec!["https://ok.example".into()],
        publish_rate: 1,
        publish_burst: 1,
        max_rooms: 1,
        ..Config::default()
    });
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
    let cases: Vec<(String, &str)> = vec![
        (
            "POST /publish HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.example\r\nContent-Length: 1\r\n\r\nx".into(),
            "403 Forbidden",
        ),
        ("DELETE / HTTP/1.1\r\nHost: h\r\n\r\n".into(), "405 Method Not Allowed"),
        (long_uri, "414 URI Too Long"),
        (post("image/png", "x"), "415 Unsupported Media Type"),
        (
            "POST /publish HTTP/1.1\r\nHost: h\r\nExpect: nothing\r\nContent-Length: 1\r\n\r\nx".into(),
            "417 Expectation Failed",
        ),
        (post("text/plain", "one"), "200 OK"),
        (post("text/plain", "two"), "429 Too Many Requests"),
        (
            "GET /subscribe?room=other HTTP/1.1\r\nHost: h\r\n\r\n".into(),
            "503 Service Unavailable",
        ),
        (
            "POST /publish HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "501 Not Implemented",
        ),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n".into(), "505 HTTP Version Not Supported"),
        ("GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n".into(), "404 Not Found"),
        ("GET /healthz HTTP/1.1\r\n\r\n".into(), "400 Bad Request"),
        (
            "POST /publish?room=r HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999\r\n\r\n".into(),
            "413 Content Too Large",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "a".repeat(70_000)),
            "431 Request Header Fields Too Large",
        ),
    ];
    for (req, line) in cases {
        if line.starts_with("503") {
            // A room with a held poll is in use: it does not make way for a new one.
            let holder = s.connect();
            s.feed(holder, "GET /subscribe?room=r HTTP/1.1\r\nHost: h\r\n\r\n");
        }
        let (_, r) = s.request(&req);
        let expected = format!("HTTP/1.1 {line}\r\n");
        assert!(
            r.raw.starts_with(expected.as_bytes()),
            "{line}: {:?}",
            String::from_utf8_lossy(&r.raw)
        );
    }
    let c = s.connect();
    s.feed(c, "GET / HTTP/1.1\r\n");
    s.advance(Duration::from_secs(10));
    assert!(s
        .received(c)
        .starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
    let c = s.connect();
    s.feed(
        c,
        format!(
            "GET /subscribe?room=r&since={} HTTP/1.1\r\nHost: h\r\n\r\n",
            s.cursor(1)
        ),
    );
    s.advance(Duration::from_secs(30));
    let got = s.received(c);
    assert!(
        got.starts_with(b"HTTP/1.1 204 No Content\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // A server on loopback refuses a foreign Host (DNS rebinding).
    let mut s = Sim::new(Config {
        listen_loopback: true,
        ..Config::default()
    });
    let (_, r) = s.request("GET /healthz HTTP/1.1\r\nHost: rebind.example\r\n\r\n");
    assert!(
        r.raw.starts_with(b"HTTP/1.1 421 Misdirected Request\r\n"),
        "{:?}",
        String::from_utf8_lossy(&r.raw)
    );
}
