//! DESIGN §2 and docs/HTTP.md as a client sees them: routing, publishing, cursors, long-polls.

use std::time::{Duration, Instant};

use parlor_tests::{both, parse_metrics, split_cursor, Kind, Server};
use serde_json::Value;

both!(
    routing_page,
    routing_head,
    routing_assets,
    routing_healthz,
    routing_metrics,
    routing_not_found,
    routing_method_not_allowed,
    room_names,
    max_rooms,
    publish_text,
    publish_no_content_type,
    publish_form,
    publish_json,
    publish_json_idempotent_id,
    publish_chunked,
    publish_errors,
    publish_too_large,
    publish_unsupported_type,
    publish_origin,
    publish_allow_origin,
    options_and_cors,
    publish_rate_limit,
    cursors_sequence,
    since_answers_at_once,
    since_zero,
    last_event_id,
    json_batch,
    json_batch_cap,
    gap_after_eviction,
    gap_after_byte_eviction,
    cursor_of_another_epoch,
    invalid_cursor,
    held_poll_then_publish,
    held_polls_fan_out,
    poll_timeout_keeps_cursor,
    poll_timeout_without_since,
);

fn asset(name: &str) -> Vec<u8> {
    let path = parlor_tests::server::workspace_root()
        .join("core/assets")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn routing_page(kind: Kind) {
    let s = Server::start(kind);
    let r = s.get("/");
    r.assert_status(200).assert_type("text/html; charset=utf-8");
    let csp = r.must_header("Content-Security-Policy");
    assert!(
        csp.contains("default-src 'self'"),
        "CSP must contain default-src 'self', got {csp:?}"
    );
    assert!(
        r.body == asset("index.html"),
        "GET / must serve core/assets/index.html byte for byte, got\n{r}"
    );
    // `/?room=R` opens room R: same page.
    let r2 = s.get("/?room=other");
    r2.assert_status(200);
    assert_eq!(r2.body, r.body);
}

fn routing_head(kind: Kind) {
    let s = Server::start(kind);
    let get = s.get("/");
    let mut c = s.client();
    let head = c.exchange("HEAD", "/", &[], b"");
    head.assert_status(200)
        .assert_type("text/html; charset=utf-8");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("Content-Length"),
        get.header("Content-Length"),
        "HEAD / must announce the length GET / sends"
    );
    assert_eq!(
        head.header("Content-Security-Policy"),
        get.header("Content-Security-Policy")
    );
    // No body bytes follow the head: the next response on the connection parses cleanly.
    c.get("/healthz").assert_status(200);
}

fn routing_assets(kind: Kind) {
    let s = Server::start(kind);
    let js = s.get("/chat.js");
    js.assert_status(200);
    let t = js.must_header("Content-Type");
    assert!(
        t.starts_with("text/javascript") || t.starts_with("application/javascript"),
        "chat.js Content-Type {t:?}"
    );
    assert!(
        js.body == asset("chat.js"),
        "chat.js differs from core/assets/chat.js"
    );
    let css = s.get("/chat.css");
    css.assert_status(200);
    let t = css.must_header("Content-Type");
    assert!(t.starts_with("text/css"), "chat.css Content-Type {t:?}");
    assert!(
        css.body == asset("chat.css"),
        "chat.css differs from core/assets/chat.css"
    );
}

fn routing_healthz(kind: Kind) {
    let s = Server::start(kind);
    let r = s.get("/healthz");
    r.assert_status(200)
        .assert_type("text/plain; charset=utf-8")
        .assert_dynamic();
    assert_eq!(r.text(), "ok\n");
}

fn routing_metrics(kind: Kind) {
    let s = Server::start(kind);
    s.publish("main", "one");
    s.get("/nope").assert_status(404);
    let mut held = s.client();
    held.send_request("GET", "/subscribe?room=main", &[], b"");
    s.wait_held(1);

    let r = s.get("/metrics");
    r.assert_status(200).assert_dynamic();
    let t = r.must_header("Content-Type");
    assert!(t.starts_with("text/plain"), "metrics Content-Type {t:?}");
    let text = r.text();
    let samples = parse_metrics(text);
    assert!(
        text.contains("# TYPE "),
        "Prometheus text has # TYPE lines:\n{text}"
    );
    // DESIGN §2 names: connections, held polls, rooms, messages published and delivered, bytes,
    // requests rejected by reason. Names are the server's; each concept must be there.
    let find = |what: &str, pred: &dyn Fn(&str) -> bool| -> Vec<&parlor_tests::Sample> {
        let found: Vec<_> = samples.iter().filter(|s| pred(&s.name)).collect();
        assert!(!found.is_empty(), "no metric for {what} in\n{text}");
        found
    };
    let conns = find("connections", &|n| n.contains("connection"));
    assert!(
        conns.iter().any(|s| s.value >= 2.0),
        "a connections metric counts the open connections (>= 2 now):\n{text}"
    );
    let held_m = find("held polls", &|n| n.contains("held") || n.contains("poll"));
    assert!(
        held_m.iter().any(|s| s.value >= 1.0),
        "a held-polls metric is >= 1 while one poll is held:\n{text}"
    );
    find("rooms", &|n| n.contains("room"));
    let published = find("messages published", &|n| n.contains("publish"));
    assert!(
        published.iter().any(|s| s.value >= 1.0),
        "published count >= 1 after a publish:\n{text}"
    );
    find("messages delivered", &|n| n.contains("deliver"));
    find("bytes", &|n| n.contains("bytes"));
    let rejected = find("requests rejected", &|n| n.contains("reject"));
    assert!(
        rejected
            .iter()
            .any(|s| s.labels.contains("reason=") || s.labels.contains("status=")),
        "rejected requests are labelled by reason (or status):\n{text}"
    );
    drop(held);
}

fn routing_not_found(kind: Kind) {
    let s = Server::start(kind);
    for target in ["/nope", "/subscribe/x", "/chat.jsx", "//", "/healthz/"] {
        let r = s.get(target);
        r.assert_error(404);
        assert_eq!(r.text(), "not found\n", "{target}");
    }
    // docs/HTTP.md routes `/` only; any other path, `/index.html` included, is 404.
    let r = s.get("/index.html");
    assert_eq!(
        r.status, 404,
        "GET /index.html: docs/HTTP.md lists no such route (\"other paths: 404\"), got {} {}",
        r.status, r.reason
    );
}

fn routing_method_not_allowed(kind: Kind) {
    let s = Server::start(kind);
    let allow = |method: &str, target: &str| -> String {
        let r = s.exchange(method, target, &[], b"");
        r.assert_error(405);
        r.must_header("Allow").to_owned()
    };
    let tokens = |v: &str| -> Vec<String> { v.split(',').map(|t| t.trim().to_owned()).collect() };

    let a = tokens(&allow("POST", "/"));
    assert!(
        a.contains(&"GET".into()) && a.contains(&"HEAD".into()),
        "Allow for /: {a:?}"
    );
    let a = tokens(&allow("GET", "/publish?room=main"));
    assert!(
        a.contains(&"POST".into()) && !a.contains(&"GET".into()),
        "Allow for /publish: {a:?}"
    );
    let a = tokens(&allow("DELETE", "/subscribe?room=main"));
    assert!(a.contains(&"GET".into()), "Allow for /subscribe: {a:?}");
    let a = tokens(&allow("PUT", "/healthz"));
    assert!(a.contains(&"GET".into()), "Allow for /healthz: {a:?}");
    let a = tokens(&allow("POST", "/metrics"));
    assert!(a.contains(&"GET".into()), "Allow for /metrics: {a:?}");
}

fn room_names(kind: Kind) {
    let s = Server::start(kind);
    let ok64 = "a".repeat(64);
    for room in ["main", "A-z_09", ok64.as_str()] {
        s.publish(room, "hi");
        let r = s.get(&format!("/subscribe?room={room}&since=0"));
        r.assert_status(200);
        assert_eq!(r.text(), "hi");
    }
    // The default room is `main`.
    let r = s.get("/subscribe?since=0");
    r.assert_status(200);
    assert_eq!(r.text(), "hi");

    let bad65 = "a".repeat(65);
    for room in ["", "a%20b", "a.b", "caf%C3%A9", "a/b", bad65.as_str()] {
        s.exchange(
            "POST",
            &format!("/publish?room={room}"),
            &[("Content-Type", "text/plain")],
            b"x",
        )
        .assert_error(400);
        s.get(&format!("/subscribe?room={room}&since=0"))
            .assert_error(400);
    }
}

fn max_rooms(kind: Kind) {
    let s = Server::with_args(kind, &["--max-rooms", "2"]);
    s.publish("r1", "x");
    s.publish("r2", "x");
    // Rooms in use (a poll held in each) are not evicted for a new one.
    let mut holders = Vec::new();
    for room in ["r1", "r2"] {
        let mut c = s.client();
        c.send_request("GET", &format!("/subscribe?room={room}"), &[], b"");
        holders.push(c);
    }
    s.wait_held(2);
    let r = s.exchange(
        "POST",
        "/publish?room=r3",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    r.assert_error(503);
    // Existing rooms still work.
    s.publish("r1", "y");
}

fn publish_text(kind: Kind) {
    let s = Server::start(kind);
    let r = s.exchange(
        "POST",
        "/publish?room=t",
        &[("Content-Type", "text/plain; charset=utf-8")],
        "héllo\nwörld ✓".as_bytes(),
    );
    r.assert_status(200)
        .assert_type("text/plain; charset=utf-8")
        .assert_dynamic();
    let cursor = r.cursor();
    s.assert_cursor(&cursor, 1);
    assert_eq!(
        r.text(),
        format!("{cursor}\n"),
        "text answer is the cursor and a newline"
    );
    let g = s.get("/subscribe?room=t&since=0");
    g.assert_status(200)
        .assert_type("text/plain; charset=utf-8")
        .assert_dynamic();
    assert_eq!(g.text(), "héllo\nwörld ✓");
    assert_eq!(g.cursor(), cursor);
}

fn publish_no_content_type(kind: Kind) {
    let s = Server::start(kind);
    let r = s.exchange("POST", "/publish?room=t", &[], b"raw body");
    r.assert_status(200);
    let cursor = r.cursor();
    s.assert_cursor(&cursor, 1);
    let g = s.get("/subscribe?room=t&since=0");
    assert_eq!(g.text(), "raw body");
    assert_eq!(g.cursor(), cursor);
    // Media types are case-insensitive (RFC 9110 §8.3.1).
    let r = s.exchange(
        "POST",
        "/publish?room=t",
        &[("Content-Type", "Text/Plain; Charset=UTF-8")],
        b"mixed case",
    );
    r.assert_status(200);
    s.assert_cursor(&r.cursor(), 2);
    let r = s.exchange(
        "POST",
        "/publish?room=t",
        &[("Content-Type", "APPLICATION/JSON")],
        br#"{"message":"json"}"#,
    );
    r.assert_status(200);
    s.assert_cursor(&r.cursor(), 3);
}

fn publish_form(kind: Kind) {
    let s = Server::start(kind);
    let r = s.exchange(
        "POST",
        "/publish?room=f",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=x&message=hello+world%21+%E2%9C%93&other=1",
    );
    r.assert_status(200);
    let cursor = r.cursor();
    s.assert_cursor(&cursor, 1);
    assert_eq!(r.text(), format!("{cursor}\n"));
    let g = s.get("/subscribe?room=f&since=0");
    assert_eq!(g.text(), "hello world! ✓");
}

fn publish_json(kind: Kind) {
    let s = Server::start(kind);
    let r = s.exchange(
        "POST",
        "/publish?room=j",
        &[("Content-Type", "application/json")],
        br#"{"message":"hi \"there\" \u2713"}"#,
    );
    r.assert_status(200)
        .assert_type("application/json")
        .assert_dynamic();
    let cursor = r.cursor();
    s.assert_cursor(&cursor, 1);
    assert_eq!(r.json(), serde_json::json!({ "cursor": cursor }));
    let g = s.get("/subscribe?room=j&since=0");
    assert_eq!(g.text(), "hi \"there\" ✓");

    // A text body with Accept: application/json gets the JSON answer.
    let r = s.exchange(
        "POST",
        "/publish?room=j",
        &[
            ("Content-Type", "text/plain"),
            ("Accept", "application/json"),
        ],
        b"plain",
    );
    r.assert_status(200).assert_type("application/json");
    assert_eq!(r.json()["cursor"], Value::String(r.cursor()));
    s.assert_cursor(&r.cursor(), 2);
}

fn publish_json_idempotent_id(kind: Kind) {
    let s = Server::start(kind);
    let send = |body: &str| {
        let r = s.exchange(
            "POST",
            "/publish?room=i",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        r.assert_status(200);
        r.cursor()
    };
    let first = send(r#"{"message":"once","id":"k-1"}"#);
    let other = send(r#"{"message":"another","id":"k-2"}"#);
    let again = send(r#"{"message":"once","id":"k-1"}"#);
    assert_eq!(again, first, "a repeated id returns the original cursor");
    s.assert_cursor(&first, 1);
    s.assert_cursor(&other, 2);
    let b = s.get("/subscribe?room=i&since=0&format=json");
    b.assert_status(200);
    let texts: Vec<_> = b.json()["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["once", "another"], "published once only");
}

fn publish_chunked(kind: Kind) {
    let s = Server::start(kind);
    let mut c = s.client();
    let head = format!(
        "POST /publish?room=c HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        c.host()
    );
    c.send(head.as_bytes());
    c.send(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.read_response();
    r.assert_status(200);
    let cursor = r.cursor();
    s.assert_cursor(&cursor, 1);
    let g = s.get("/subscribe?room=c&since=0");
    assert_eq!(g.text(), "hello world");
    assert_eq!(g.cursor(), cursor);
}

fn publish_errors(kind: Kind) {
    let s = Server::start(kind);
    let post = |ct: Option<&str>, body: &[u8]| {
        let headers: Vec<(&str, &str)> = ct.map(|t| ("Content-Type", t)).into_iter().collect();
        s.exchange("POST", "/publish?room=e", &headers, body)
    };
    // Missing or empty message.
    post(Some("text/plain"), b"").assert_error(400);
    post(None, b"").assert_error(400);
    post(Some("application/x-www-form-urlencoded"), b"id=1").assert_error(400);
    post(Some("application/x-www-form-urlencoded"), b"message=").assert_error(400);
    post(Some("application/json"), br#"{"id":"x"}"#).assert_error(400);
    post(Some("application/json"), br#"{"message":""}"#).assert_error(400);
    post(Some("application/json"), br#"{"message":42}"#).assert_error(400);
    post(Some("application/json"), b"{not json").assert_error(400);
    // Invalid UTF-8.
    post(Some("text/plain"), b"ab\xff\xfecd").assert_error(400);
    post(Some("application/x-www-form-urlencoded"), b"message=%FF%FE").assert_error(400);
    // Nothing was published by any of these: the oldest message is the first one that succeeds.
    let cursor = s.publish("e", "marker");
    assert_eq!(
        split_cursor(&cursor).1,
        1,
        "a rejected request must not publish"
    );
    let r = s.get("/subscribe?room=e&since=0");
    assert_eq!(r.text(), "marker");
}

fn publish_too_large(kind: Kind) {
    let s = Server::with_args(
        kind,
        &["--max-message-bytes", "16", "--poll-timeout", "300ms"],
    );
    let post = |ct: &str, body: &[u8]| {
        s.exchange("POST", "/publish?room=big", &[("Content-Type", ct)], body)
    };
    post("text/plain", &[b'x'; 16]).assert_status(200);
    post("text/plain", &[b'x'; 17]).assert_error(413);
    let json = format!(r#"{{"message":"{}"}}"#, "y".repeat(17));
    post("application/json", json.as_bytes()).assert_error(413);
}

fn publish_unsupported_type(kind: Kind) {
    let s = Server::start(kind);
    for ct in [
        "application/octet-stream",
        "image/png",
        "multipart/form-data; boundary=x",
    ] {
        s.exchange("POST", "/publish?room=u", &[("Content-Type", ct)], b"data")
            .assert_error(415);
    }
}

fn publish_origin(kind: Kind) {
    let s = Server::start(kind);
    let post = |origin: &str| {
        s.exchange(
            "POST",
            "/publish?room=o",
            &[("Content-Type", "text/plain"), ("Origin", origin)],
            b"hi",
        )
    };
    post("http://evil.example").assert_error(403);
    post("null").assert_error(403);
    let same = format!("http://{}", s.host());
    post(&same).assert_status(200);
}

fn publish_allow_origin(kind: Kind) {
    let s = Server::with_args(kind, &["--allow-origin", "http://chat.example"]);
    let post = |origin: &str| {
        s.exchange(
            "POST",
            "/publish?room=o",
            &[("Content-Type", "text/plain"), ("Origin", origin)],
            b"hi",
        )
    };
    post("http://chat.example").assert_status(200);
    post("http://evil.example").assert_error(403);
    post(&format!("http://{}", s.host())).assert_status(200);
}

fn options_and_cors(kind: Kind) {
    let s = Server::with_args(kind, &["--allow-origin", "http://chat.example"]);
    let has = |list: &str, item: &str| list.split(',').any(|t| t.trim().eq_ignore_ascii_case(item));
    // OPTIONS on a known path: 204 with Allow.
    for (target, method) in [
        ("/publish?room=c", "POST"),
        ("/subscribe?room=c", "GET"),
        ("/", "GET"),
    ] {
        let r = s.exchange("OPTIONS", target, &[], b"");
        r.assert_status(204);
        let allow = r.must_header("Allow");
        assert!(
            has(allow, method),
            "OPTIONS {target}: Allow {allow:?} lacks {method}"
        );
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            None,
            "no CORS without an Origin\n{r}"
        );
    }
    s.exchange("OPTIONS", "/nope", &[], b"").assert_error(404);

    // A preflight from an allowed origin.
    let preflight = |origin: &str| {
        s.exchange(
            "OPTIONS",
            "/publish?room=c",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let r = preflight("http://chat.example");
    r.assert_status(204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://chat.example"),
        "{r}"
    );
    let methods = r.must_header("Access-Control-Allow-Methods");
    assert!(
        has(methods, "POST"),
        "Access-Control-Allow-Methods {methods:?}"
    );
    let headers = r.must_header("Access-Control-Allow-Headers");
    assert!(
        has(headers, "content-type"),
        "Access-Control-Allow-Headers {headers:?}"
    );
    // From any other origin: 403.
    preflight("http://evil.example").assert_error(403);

    // Answers to an allowed origin carry the CORS headers.
    let origin = [
        ("Origin", "http://chat.example"),
        ("Content-Type", "application/json"),
    ];
    let r = s.exchange("POST", "/publish?room=c", &origin, br#"{"message":"x"}"#);
    r.assert_status(200);
    let check_cors = |r: &parlor_tests::Response| {
        assert_eq!(
            r.header("Access-Control-Allow-Origin"),
            Some("http://chat.example"),
            "{r}"
        );
        let expose = r.must_header("Access-Control-Expose-Headers");
        assert!(
            has(expose, "Parlor-Cursor") && has(expose, "Parlor-Gap"),
            "Access-Control-Expose-Headers {expose:?}"
        );
        let vary = r.headers_named("Vary").join(",");
        assert!(has(&vary, "Origin"), "Vary {vary:?} lacks Origin\n{r}");
    };
    check_cors(&r);
    let r = s.exchange(
        "GET",
        "/subscribe?room=c&since=0",
        &[("Origin", "http://chat.example")],
        b"",
    );
    r.assert_status(200);
    check_cors(&r);
    // A held poll from that origin too.
    let mut c = s.client();
    c.send_request(
        "GET",
        "/subscribe?room=c&format=json",
        &[("Origin", "http://chat.example")],
        b"",
    );
    s.wait_held(1);
    s.publish("c", "y");
    let r = c.read_response();
    r.assert_status(200);
    check_cors(&r);
    // Same-origin and origin-less answers carry none.
    let r = s.get("/subscribe?room=c&since=0");
    assert_eq!(r.header("Access-Control-Allow-Origin"), None, "{r}");
}

fn publish_rate_limit(kind: Kind) {
    let s = Server::with_args(kind, &["--publish-rate", "1", "--publish-burst", "1"]);
    let post = || {
        s.exchange(
            "POST",
            "/publish?room=r",
            &[("Content-Type", "text/plain")],
            b"hi",
        )
    };
    post().assert_status(200);
    let r = post();
    r.assert_error(429);
    let after: u64 = r
        .must_header("Retry-After")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is delta-seconds in\n{r}"));
    assert!((1..=60).contains(&after), "Retry-After {after}");
    // Subscribing is not publishing: not limited.
    s.get("/subscribe?room=r&since=0").assert_status(200);
    // The bucket refills at 1/s.
    std::thread::sleep(Duration::from_millis(1100 * after));
    post().assert_status(200);
}

fn cursors_sequence(kind: Kind) {
    let s = Server::start(kind);
    let a1 = s.publish("a", "1");
    let a2 = s.publish("a", "2");
    let b1 = s.publish("b", "1");
    let (ea1, sa1) = split_cursor(&a1);
    let (ea2, sa2) = split_cursor(&a2);
    let (eb1, sb1) = split_cursor(&b1);
    assert_eq!(
        (sa1, sa2, sb1),
        (1, 2, 1),
        "per-room sequence numbers from 1"
    );
    assert!(ea1 == ea2 && ea1 == eb1, "one epoch per server run");
    // The epoch is the start time in ms, base 36: within a day of now.
    let epoch = u64::from_str_radix(ea1, 36).expect("base 36 epoch");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        epoch <= now + 60_000 && now - epoch < 86_400_000,
        "epoch {ea1} = {epoch} ms is not the server's start time (now {now})"
    );
}

fn since_answers_at_once(kind: Kind) {
    let s = Server::start(kind);
    let c1 = s.publish("s", "first");
    let c2 = s.publish("s", "second");
    let c3 = s.publish("s", "third");
    for (c, seq) in [(&c1, 1), (&c2, 2), (&c3, 3)] {
        s.assert_cursor(c, seq);
    }
    let t = Instant::now();
    let r = s.get(&format!("/subscribe?room=s&since={c1}"));
    r.assert_status(200)
        .assert_type("text/plain; charset=utf-8")
        .assert_dynamic();
    assert!(t.elapsed() < parlor_tests::PROMPT);
    assert_eq!(r.text(), "second", "the oldest message after the cursor");
    assert_eq!(r.cursor(), c2);
    assert_eq!(r.header("Parlor-Gap"), None, "no gap header without a gap");
    let r = s.get(&format!("/subscribe?room=s&since={c2}"));
    assert_eq!(r.text(), "third");
    assert_eq!(r.cursor(), c3);
    // After the newest: held.
    let mut c = s.client();
    c.send_request("GET", &format!("/subscribe?room=s&since={c3}"), &[], b"");
    c.expect_nothing(Duration::from_millis(400));
    let c4 = s.publish("s", "fourth");
    s.assert_cursor(&c4, 4);
    let r = c.read_response();
    assert_eq!(r.text(), "fourth");
    assert_eq!(r.cursor(), c4);
}

fn since_zero(kind: Kind) {
    let s = Server::start(kind);
    // Empty room: since=0 waits.
    let mut c = s.client();
    c.send_request("GET", "/subscribe?room=z&since=0", &[], b"");
    c.expect_nothing(Duration::from_millis(400));
    let c1 = s.publish("z", "one");
    s.assert_cursor(&c1, 1);
    let r = c.read_response();
    r.assert_status(200);
    assert_eq!(r.text(), "one");
    assert_eq!(r.cursor(), c1);
    s.publish("z", "two");
    let r = s.get("/subscribe?room=z&since=0");
    assert_eq!(
        r.text(),
        "one",
        "since=0 starts at the oldest retained message"
    );
    assert_eq!(r.cursor(), c1);
    // `<epoch>-0` is "before the first message".
    let (epoch, _) = split_cursor(&c1);
    let r = s.get(&format!("/subscribe?room=z&since={epoch}-0"));
    assert_eq!(r.text(), "one");
    assert_eq!(r.header("Parlor-Gap"), None);
}

fn last_event_id(kind: Kind) {
    let s = Server::start(kind);
    let c1 = s.publish("l", "one");
    let c2 = s.publish("l", "two");
    s.assert_cursor(&c1, 1);
    s.assert_cursor(&c2, 2);
    let r = s.exchange("GET", "/subscribe?room=l", &[("Last-Event-ID", &c1)], b"");
    r.assert_status(200);
    assert_eq!(r.text(), "two");
    assert_eq!(r.cursor(), c2);
}

fn json_batch(kind: Kind) {
    let s = Server::start(kind);
    let c1 = s.publish("j", "one");
    let c2 = s.publish("j", "two");
    let c3 = s.publish("j", "<b>three</b> \"q\" ✓");
    for (c, seq) in [(&c1, 1), (&c2, 2), (&c3, 3)] {
        s.assert_cursor(c, seq);
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (target, headers) in [
        ("/subscribe?room=j&since=0&format=json", vec![]),
        (
            "/subscribe?room=j&since=0",
            vec![("Accept", "application/json")],
        ),
    ] {
        let r = s.exchange("GET", target, &headers, b"");
        r.assert_status(200)
            .assert_type("application/json")
            .assert_dynamic();
        let v = r.json();
        assert_eq!(v["room"], "j", "{r}");
        assert_eq!(v["next"], Value::String(c3.clone()), "{r}");
        assert_eq!(v["gap"], 0, "{r}");
        assert_eq!(r.cursor(), c3, "Parlor-Cursor is the next cursor");
        let msgs = v["messages"].as_array().expect("messages array");
        let got: Vec<(&str, &str)> = msgs
            .iter()
            .map(|m| (m["cursor"].as_str().unwrap(), m["text"].as_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (c1.as_str(), "one"),
                (c2.as_str(), "two"),
                (c3.as_str(), "<b>three</b> \"q\" ✓")
            ]
        );
        for m in msgs {
            let t = m["time"].as_i64().expect("time in ms");
            assert!(
                (before - t).abs() < 600_000,
                "time {t} is not ms since the Unix epoch"
            );
        }
    }
    // After a cursor: only the newer ones.
    let r = s.get(&format!("/subscribe?room=j&since={c2}&format=json"));
    let v = r.json();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["messages"][0]["cursor"], Value::String(c3.clone()));
    // Held JSON poll gets a batch too.
    let mut c = s.client();
    c.send_request(
        "GET",
        &format!("/subscribe?room=j&since={c3}&format=json"),
        &[],
        b"",
    );
    c.expect_nothing(Duration::from_millis(300));
    let c4 = s.publish("j", "four");
    let r = c.read_response();
    r.assert_status(200).assert_type("application/json");
    let v = r.json();
    assert_eq!(v["messages"][0]["text"], "four");
    assert_eq!(v["next"], Value::String(c4));
}

fn json_batch_cap(kind: Kind) {
    let s = Server::with_args(kind, &["--batch-messages", "2"]);
    let cs: Vec<String> = (1..=5).map(|i| s.publish("b", &format!("m{i}"))).collect();
    let r = s.get("/subscribe?room=b&since=0&format=json");
    let v = r.json();
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m1", "m2"], "at most the batch cap, oldest first");
    assert_eq!(
        v["next"],
        Value::String(cs[1].clone()),
        "next continues after the batch"
    );
    let r = s.get(&format!("/subscribe?room=b&since={}&format=json", cs[1]));
    let v = r.json();
    assert_eq!(v["messages"][0]["text"], "m3");
}

fn gap_after_eviction(kind: Kind) {
    let s = Server::with_args(kind, &["--history-messages", "3"]);
    let cs: Vec<String> = (1..=5).map(|i| s.publish("g", &format!("m{i}"))).collect();
    // History holds m3..m5. After m1, m2 was missed.
    let r = s.get(&format!("/subscribe?room=g&since={}", cs[0]));
    r.assert_status(200);
    assert_eq!(r.text(), "m3", "answered from the oldest retained message");
    assert_eq!(r.cursor(), cs[2]);
    assert_eq!(
        r.header("Parlor-Gap"),
        Some("1"),
        "one message (m2) missed:\n{r}"
    );
    let (epoch, _) = split_cursor(&cs[0]);
    let r = s.get(&format!("/subscribe?room=g&since={epoch}-0"));
    assert_eq!(r.text(), "m3");
    assert_eq!(r.header("Parlor-Gap"), Some("2"), "m1 and m2 missed:\n{r}");
    let r = s.get(&format!("/subscribe?room=g&since={}&format=json", cs[0]));
    let v = r.json();
    assert_eq!(v["gap"], 1, "{r}");
    let texts: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m3", "m4", "m5"]);
    // No gap from a retained cursor.
    let r = s.get(&format!("/subscribe?room=g&since={}", cs[2]));
    assert_eq!(r.text(), "m4");
    assert_eq!(r.header("Parlor-Gap"), None);
}

fn gap_after_byte_eviction(kind: Kind) {
    // A room's history is bounded in bytes too: each message costs its text and 96 bytes
    // (docs/HTTP.md, "Hostile traffic"), so four 15-byte messages do not fit in 2 × 111 + 10.
    let s = Server::with_args(
        kind,
        &["--history-bytes", "232", "--max-message-bytes", "16"],
    );
    let cs: Vec<String> = (1..=4)
        .map(|i| s.publish("g", &format!("message-{i:07}")))
        .collect();
    let r = s.get(&format!("/subscribe?room=g&since={}&format=json", cs[0]));
    r.assert_status(200);
    let v = r.json();
    let msgs = v["messages"].as_array().expect("messages");
    let gap = v["gap"].as_u64().expect("gap");
    // 111-byte messages in 232 bytes: the fourth publish leaves messages 3 and 4 (222 bytes),
    // so a cursor at message 1 missed exactly message 2.
    assert_eq!(gap, 1, "older messages were evicted by size\n{r}");
    assert_eq!(
        gap as usize + msgs.len(),
        3,
        "missed + delivered = the 3 messages after the cursor\n{r}"
    );
    assert_eq!(msgs.len(), 2, "{r}");
    assert_eq!(msgs[0]["text"], "message-0000003");
    assert_eq!(msgs.last().unwrap()["text"], "message-0000004");
    let plain = s.get(&format!("/subscribe?room=g&since={}", cs[0]));
    assert_eq!(
        plain.header("Parlor-Gap"),
        Some(gap.to_string().as_str()),
        "{plain}"
    );
}

fn cursor_of_another_epoch(kind: Kind) {
    let s = Server::with_args(kind, &["--history-messages", "3"]);
    let c1 = s.publish("x", "m1");
    let (epoch, _) = split_cursor(&c1);
    let other = if epoch == "1" { "2" } else { "1" };
    // Nothing evicted: from the oldest message.
    let r = s.get(&format!("/subscribe?room=x&since={other}-7"));
    r.assert_status(200);
    assert_eq!(
        r.text(),
        "m1",
        "a cursor of another epoch is answered from the oldest message"
    );
    for i in 2..=5 {
        s.publish("x", &format!("m{i}"));
    }
    let r = s.get(&format!("/subscribe?room=x&since={other}-7"));
    r.assert_status(200);
    assert_eq!(r.text(), "m3");
    let gap: u64 = r
        .must_header("Parlor-Gap")
        .parse()
        .unwrap_or_else(|_| panic!("Parlor-Gap is a number in\n{r}"));
    // History 3 of 5 messages: messages 1 and 2 are gone, the oldest retained is 3.
    assert_eq!(gap, 2, "messages 1 and 2 were missed");
    let r = s.get(&format!("/subscribe?room=x&since={other}-7&format=json"));
    let v = r.json();
    assert_eq!(v["gap"], 2, "{r}");
    assert_eq!(r.header("Parlor-Gap"), Some("2"), "{r}");
    assert_eq!(v["messages"][0]["text"], "m3");
}

fn invalid_cursor(kind: Kind) {
    let s = Server::start(kind);
    let c1 = s.publish("v", "m1");
    let (epoch, _) = split_cursor(&c1);
    let ahead = format!("{epoch}-99");
    for since in [
        "garbage",
        "-1",
        "abc-",
        "-5",
        "x-y",
        "1-2-3",
        ahead.as_str(),
    ] {
        s.get(&format!("/subscribe?room=v&since={since}"))
            .assert_error(400);
    }
}

fn held_poll_then_publish(kind: Kind) {
    let s = Server::start(kind);
    let mut c = s.client();
    c.send_request("GET", "/subscribe?room=h", &[], b"");
    s.wait_held(1);
    c.expect_nothing(Duration::from_millis(300));
    let t = Instant::now();
    let cursor = s.publish("h", "hello, waiter");
    s.assert_cursor(&cursor, 1);
    let r = c.read_response();
    assert!(t.elapsed() < parlor_tests::PROMPT);
    r.assert_status(200)
        .assert_type("text/plain; charset=utf-8")
        .assert_dynamic();
    assert_eq!(r.text(), "hello, waiter");
    assert_eq!(r.cursor(), cursor);
    // The connection stays usable: poll again with the cursor.
    c.send_request(
        "GET",
        &format!("/subscribe?room=h&since={cursor}"),
        &[],
        b"",
    );
    c.expect_nothing(Duration::from_millis(300));
    s.publish("h", "again");
    assert_eq!(c.read_response().text(), "again");
    // A publish to another room does not wake it.
    c.send_request("GET", "/subscribe?room=h", &[], b"");
    c.expect_nothing(Duration::from_millis(300));
    s.publish("other", "not for you");
    c.expect_nothing(Duration::from_millis(300));
}

fn held_polls_fan_out(kind: Kind) {
    let s = Server::start(kind);
    let mut clients: Vec<_> = (0..20).map(|_| s.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let target = if i % 2 == 0 {
            "/subscribe?room=f"
        } else {
            "/subscribe?room=f&format=json"
        };
        c.send_request("GET", target, &[], b"");
    }
    s.wait_held(20);
    let cursor = s.publish("f", "to all");
    s.assert_cursor(&cursor, 1);
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response();
        r.assert_status(200);
        assert_eq!(r.cursor(), cursor);
        if i % 2 == 0 {
            assert_eq!(r.text(), "to all");
        } else {
            assert_eq!(r.json()["messages"][0]["text"], "to all");
        }
    }
}

fn poll_timeout_keeps_cursor(kind: Kind) {
    let s = Server::with_args(kind, &["--poll-timeout", "300ms"]);
    let c1 = s.publish("p", "one");
    s.assert_cursor(&c1, 1);
    let mut c = s.client();
    let t = Instant::now();
    c.send_request("GET", &format!("/subscribe?room=p&since={c1}"), &[], b"");
    let r = c.read_response();
    let took = t.elapsed();
    r.assert_status(204).assert_dynamic();
    assert!(r.body.is_empty());
    assert_eq!(r.cursor(), c1, "204 carries the unchanged cursor");
    assert!(took >= Duration::from_millis(200), "held only {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "204 after {took:?} for a 300ms timeout"
    );
    // The JSON form times out the same way, and the connection stays open.
    c.send_request(
        "GET",
        &format!("/subscribe?room=p&since={c1}&format=json"),
        &[],
        b"",
    );
    let r = c.read_response();
    r.assert_status(204);
    assert_eq!(r.cursor(), c1);
    c.get("/healthz").assert_status(200);
}

fn poll_timeout_without_since(kind: Kind) {
    let s = Server::with_args(kind, &["--poll-timeout", "300ms"]);
    // Empty room: the cursor to poll with next is "before the first message".
    let r = s.get("/subscribe?room=e");
    r.assert_status(204);
    s.assert_cursor(&r.cursor(), 0);
    let c2 = {
        s.publish("e", "one");
        s.publish("e", "two")
    };
    let r = s.get("/subscribe?room=e");
    r.assert_status(204);
    assert_eq!(r.cursor(), c2, "the cursor to poll with next is the newest");
    s.assert_cursor(&c2, 2);
}
