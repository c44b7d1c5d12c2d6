//! Hostile traffic (issue 12), against both binaries: Host and Origin rules, absolute-form
//! targets, byte-bounded batches, room churn, and a shutdown that does not wait for peers to
//! close.

use std::time::{Duration, Instant};

use parlor_tests::{both, request, Client, Kind, Server};

both!(
    foreign_host_is_misdirected_on_loopback,
    allowed_hosts_are_served,
    cross_origin_subscribe_is_refused,
    absolute_form_targets_are_served,
    escaped_history_loads_in_pieces,
    rooms_churn_under_the_cap,
    shutdown_does_not_wait_for_connected_clients,
    shutdown_answers_a_request_whose_head_arrived,
);

/// One request with the given `Host` on a new connection.
fn with_host(
    s: &Server,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> parlor_tests::Response {
    let mut c = s.client();
    c.send(&request(method, target, host, headers, body));
    c.read_response()
}

fn metric(s: &Server, name: &str) -> f64 {
    s.metrics()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .value
}

fn foreign_host_is_misdirected_on_loopback(kind: Kind) {
    let s = Server::start(kind);
    // DNS rebinding: a page on rebind.example whose name now resolves to 127.0.0.1.
    let origin = [
        ("Origin", "http://rebind.example:8080"),
        ("Content-Type", "text/plain"),
    ];
    let r = with_host(
        &s,
        "POST",
        "/publish?room=r",
        "rebind.example:8080",
        &origin,
        b"x",
    );
    r.assert_error(421);
    let r = with_host(
        &s,
        "GET",
        "/subscribe?room=r&since=0",
        "rebind.example:8080",
        &origin,
        b"",
    );
    r.assert_error(421);
    with_host(&s, "GET", "/", "rebind.example", &[], b"").assert_error(421);
    // Loopback names and addresses are served.
    let port = s.addr().port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".into(),
    ] {
        with_host(&s, "GET", "/healthz", &host, &[], b"").assert_status(200);
    }
    assert_eq!(metric(&s, "parlor_rooms_created_total"), 0.0);
}

fn allowed_hosts_are_served(kind: Kind) {
    let s = Server::with_args(
        kind,
        &[
            "--allow-host",
            "chat.example",
            "--allow-host=other.example:81",
        ],
    );
    with_host(&s, "GET", "/healthz", "chat.example", &[], b"").assert_status(200);
    with_host(&s, "GET", "/healthz", "Chat.Example:8080", &[], b"").assert_status(200);
    with_host(&s, "GET", "/healthz", "other.example:81", &[], b"").assert_status(200);
    with_host(&s, "GET", "/healthz", "other.example", &[], b"").assert_error(421);
    // Same origin is scheme, host and port: the page's own origin may publish.
    let publish = |origin: &str| {
        with_host(
            &s,
            "POST",
            "/publish?room=o",
            "chat.example:8080",
            &[("Origin", origin), ("Content-Type", "text/plain")],
            b"x",
        )
    };
    publish("http://chat.example:8080").assert_status(200);
    publish("http://chat.example").assert_error(403);
    publish("https://chat.example:8443").assert_error(403);
}

fn cross_origin_subscribe_is_refused(kind: Kind) {
    let s = Server::with_args(kind, &["--allow-origin", "https://ok.example"]);
    let r = s.exchange(
        "GET",
        "/subscribe?room=x",
        &[("Origin", "https://evil.example")],
        b"",
    );
    r.assert_error(403);
    assert_eq!(
        metric(&s, "parlor_rooms_created_total"),
        0.0,
        "no room for it"
    );
    assert_eq!(metric(&s, "parlor_held_polls"), 0.0);
    // An allow-listed origin subscribes as before.
    s.publish("x", "hello");
    let r = s.exchange(
        "GET",
        "/subscribe?room=x&since=0",
        &[("Origin", "https://ok.example")],
        b"",
    );
    r.assert_status(200);
    assert_eq!(r.text(), "hello");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("https://ok.example")
    );
}

fn absolute_form_targets_are_served(kind: Kind) {
    let s = Server::start(kind);
    let mut c = s.client();
    let host = c.host().to_owned();
    c.send(format!("GET http://{host}/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    let r = c.read_response();
    r.assert_status(200);
    assert_eq!(r.text(), "ok\n");
    s.publish("abs", "m1");
    c.send(
        format!("GET http://{host}/subscribe?room=abs&since=0 HTTP/1.1\r\nHost: {host}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.read_response().text(), "m1");
    // The authority is checked like Host: a foreign one is misdirected.
    c.send(
        format!("GET http://rebind.example/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    );
    c.read_response().assert_error(421);
}

fn escaped_history_loads_in_pieces(kind: Kind) {
    // 16 messages of 16 KiB of `<`: 1.5 MiB as JSON (`\u003c`), over the 1 MiB unsent cap.
    let s = Server::with_args(kind, &["--history-bytes", "1048576"]);
    let text = "<".repeat(16 * 1024);
    for _ in 0..16 {
        s.publish("lt", &text);
    }
    let mut c = s.client();
    let mut since = "0".to_owned();
    let mut loaded = 0;
    for _ in 0..16 {
        let r = c.get(&format!("/subscribe?room=lt&since={since}&format=json"));
        r.assert_status(200);
        let v = r.json();
        let messages = v["messages"].as_array().expect("messages");
        assert!(!messages.is_empty());
        loaded += messages.len();
        since = v["next"].as_str().expect("next").to_owned();
        if loaded >= 16 {
            break;
        }
    }
    assert_eq!(loaded, 16);
}

fn rooms_churn_under_the_cap(kind: Kind) {
    let s = Server::with_args(kind, &["--max-rooms", "2"]);
    for i in 0..6 {
        s.publish(&format!("churn{i}"), "x");
    }
    assert_eq!(metric(&s, "parlor_rooms"), 2.0);
    assert_eq!(metric(&s, "parlor_rooms_created_total"), 6.0);
    assert_eq!(metric(&s, "parlor_rooms_evicted_total"), 4.0);
    // Empty publishes (400) create nothing, however many.
    let mut c = s.client();
    let host = c.host().to_owned();
    let empty = request(
        "POST",
        "/publish?room=e",
        &host,
        &[("Content-Type", "text/plain")],
        b" ",
    );
    c.send(&empty.repeat(200));
    for _ in 0..200 {
        c.read_response().assert_error(400);
    }
    assert_eq!(metric(&s, "parlor_rooms_created_total"), 6.0);
}

const HELD: usize = 1000;

fn shutdown_does_not_wait_for_connected_clients(kind: Kind) {
    // A long grace: waiting it out would be unmistakable.
    let mut s = Server::with_args(kind, &["--shutdown-grace", "30s"]);
    let mut clients: Vec<Client> = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut c = s.client();
        c.send_request("GET", "/subscribe?room=bye", &[], b"");
        clients.push(c);
    }
    s.wait_held(HELD);
    let t = Instant::now();
    s.signal("TERM");
    // The clients stay connected (they never close): the server exits once its answers are
    // written. The bound is generous; the point is that it is not the 30 s grace.
    let status = s.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    for c in clients.iter_mut().step_by(100) {
        let r = c.read_response();
        r.assert_error(503);
        assert!(r.header("Retry-After").is_some());
    }
}

fn shutdown_answers_a_request_whose_head_arrived(kind: Kind) {
    let mut s = Server::with_args(kind, &["--shutdown-grace", "30s"]);
    let mut held = s.client();
    held.send_request("GET", "/subscribe?room=h", &[], b"");
    let mut half = s.client();
    let host = half.host().to_owned();
    let headers = [("Content-Type", "text/plain"), ("Expect", "100-continue")];
    let mut bytes = request("POST", "/publish?room=h", &host, &headers, b"0123456789");
    bytes.truncate(bytes.len() - 10);
    half.send(&bytes);
    // `100 Continue` says the server has read the whole head.
    half.read_response().assert_status(100);
    half.send(b"01234");
    s.wait_held(1);
    s.signal("TERM");
    let r = half.read_response();
    r.assert_error(503);
    assert!(r.header("Retry-After").is_some(), "{r}");
    held.read_response().assert_error(503);
    s.wait_exit(Duration::from_secs(10));
}
