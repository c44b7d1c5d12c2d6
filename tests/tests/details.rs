//! HTTP details a user hits (issue 20), against both servers: a `HEAD` is answered with headers
//! only on every route and every error path (and the request pipelined behind it still parses),
//! every answer to an allow-listed origin carries the CORS headers, `curl -d` bodies are stored
//! as typed, and the page has an icon.

use std::time::Duration;

use parlor_tests::{both, Client, Kind, Response, Server};

both!(
    head_on_every_route_has_no_body,
    head_errors_that_keep_the_connection_have_no_body,
    head_errors_that_close_the_connection_have_no_body,
    cors_headers_on_every_answer_status,
    curl_d_bodies_are_stored_as_typed,
    the_page_has_an_icon,
);

const ORIGIN: &str = "http://good.example";

/// Sends `head` (a complete HEAD request) with `GET /healthz` pipelined behind it on one
/// connection; returns the HEAD's answer after checking that the GET's answer follows it intact.
#[track_caller]
fn head_then_healthz(s: &Server, head: &str) -> Response {
    let mut c = Client::connect(s.addr());
    c.send(format!("{head}GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let r = c.read_head_response();
    assert!(r.body.is_empty());
    let next = c.read_response();
    assert_eq!(
        (next.status, next.text()),
        (200, "ok\n"),
        "the request pipelined behind {head:?} is answered intact"
    );
    r
}

/// The same request as GET, on a connection of its own.
#[track_caller]
fn as_get(s: &Server, head: &str) -> Response {
    let mut c = Client::connect(s.addr());
    c.send(head.replacen("HEAD", "GET", 1).as_bytes());
    c.read_response()
}

/// The answer to a HEAD is the GET's answer without its body, `Content-Length` included.
#[track_caller]
fn assert_head_of(head: &Response, get: &Response) {
    assert_eq!(head.status, get.status);
    let get_head = &get.raw[..get.raw.len() - get.body.len()];
    assert_eq!(
        String::from_utf8_lossy(&head.raw),
        String::from_utf8_lossy(get_head),
        "HEAD answers the GET's head"
    );
    let length: usize = head.must_header("Content-Length").parse().unwrap();
    assert_eq!(length, get.body.len());
}

fn head_on_every_route_has_no_body(kind: Kind) {
    let s = Server::start(kind);
    for path in [
        "/",
        "/chat.js",
        "/chat.css",
        "/favicon.svg",
        "/favicon.ico",
        "/healthz",
    ] {
        let req = format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let head = head_then_healthz(&s, &req);
        head.assert_status(200);
        assert_head_of(&head, &as_get(&s, &req));
    }
    // The metrics change between two requests: their HEAD only has to frame nothing.
    let head = head_then_healthz(&s, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    head.assert_status(200);
    assert!(head.must_header("Content-Length").parse::<usize>().unwrap() > 0);
}

fn head_errors_that_keep_the_connection_have_no_body(kind: Kind) {
    let s = Server::start(kind);
    // Each HEAD, and a request answered with the same error and a body (a GET of /subscribe
    // would be a poll: DELETE is refused alike).
    for (req, status, with_body) in [
        ("HEAD /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", 404, "GET"),
        (
            "HEAD /publish HTTP/1.1\r\nHost: localhost\r\n\r\n",
            405,
            "GET",
        ),
        (
            "HEAD /subscribe?room=a HTTP/1.1\r\nHost: localhost\r\n\r\n",
            405,
            "DELETE",
        ),
        (
            "HEAD /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            404,
            "GET",
        ),
    ] {
        let head = head_then_healthz(&s, req);
        head.assert_status(status);
        let mut c = Client::connect(s.addr());
        c.send(req.replacen("HEAD", with_body, 1).as_bytes());
        let get = c.read_response();
        get.assert_error(status);
        assert_head_of(&head, &get);
    }
}

fn head_errors_that_close_the_connection_have_no_body(kind: Kind) {
    let s = Server::with_args(
        kind,
        &[
            "--max-uri-bytes",
            "256",
            "--max-head-bytes",
            "1024",
            "--max-body-bytes",
            "512",
        ],
    );
    let long = format!(
        "HEAD /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(400)
    );
    let big = format!(
        "HEAD / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "v".repeat(2000)
    );
    for (req, status) in [
        ("HEAD / HTTP/1.1\r\n\r\n".to_owned(), 400),
        (
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                .to_owned(),
            400,
        ),
        (long, 414),
        (big, 431),
        (
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n".to_owned(),
            413,
        ),
        (
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nExpect: magic\r\n\r\n".to_owned(),
            417,
        ),
        (
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
            501,
        ),
        ("HEAD / HTTP/3.0\r\nHost: localhost\r\n\r\n".to_owned(), 505),
    ] {
        let mut c = Client::connect(s.addr());
        c.send(format!("{req}GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let head = c.read_head_response();
        head.assert_status(status).assert_closes();
        // Nothing follows the head: no body, and no answer to the pipelined request.
        c.expect_closed(Duration::from_secs(10));
        let get = as_get(&s, &req);
        get.assert_error(status);
        assert_head_of(&head, &get);
    }
}

/// Asserts the CORS headers of an answer to [`ORIGIN`].
#[track_caller]
fn assert_cors(r: &Response, what: &str) {
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some(ORIGIN),
        "{what}:\n{r}"
    );
    assert_eq!(r.header("Vary"), Some("Origin"), "{what}:\n{r}");
    let exposed: Vec<&str> = r
        .must_header("Access-Control-Expose-Headers")
        .split(',')
        .map(str::trim)
        .collect();
    for h in ["Parlor-Cursor", "Parlor-Gap", "Parlor-Reset", "Retry-After"] {
        assert!(exposed.contains(&h), "{what}: {h} not exposed in\n{r}");
    }
}

fn cors_headers_on_every_answer_status(kind: Kind) {
    let s = Server::with_args(
        kind,
        &[
            "--allow-origin",
            ORIGIN,
            "--max-message-bytes",
            "16",
            "--publish-rate",
            "1",
            "--publish-burst",
            "1",
            "--max-rooms",
            "2",
            "--poll-timeout",
            "200ms",
        ],
    );
    let with_origin = |method: &str, target: &str, ct: Option<&str>, body: &[u8]| {
        let mut headers = vec![("Origin", ORIGIN)];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        s.exchange(method, target, &headers, body)
    };
    let text = Some("text/plain");
    let published = with_origin("POST", "/publish?room=a", text, b"hi");
    published.assert_status(200);
    assert_cors(&published, "publish 200");
    // One message a second: publishing again at once is refused, unless a second passed (a
    // loaded machine), so try a few times.
    let too_fast = (0..10)
        .map(|_| with_origin("POST", "/publish?room=a", text, b"again"))
        .find(|r| r.status == 429)
        .expect("a burst of publishes is answered 429");
    too_fast.assert_error(429);
    assert_cors(&too_fast, "publish too fast");
    assert!(too_fast.header("Retry-After").is_some(), "{too_fast}");
    let cases: Vec<(Response, u16, &str)> = vec![
        (
            with_origin("POST", "/publish?room=a", text, b""),
            400,
            "publish empty",
        ),
        (
            with_origin("POST", "/publish?room=a", text, &[b'x'; 17]),
            413,
            "publish too large",
        ),
        (
            with_origin("POST", "/publish?room=a", Some("image/png"), b"x"),
            415,
            "publish type",
        ),
        (
            with_origin("POST", "/publish?room=a.b", text, b"x"),
            400,
            "publish bad room",
        ),
        (
            with_origin("GET", "/subscribe?room=a&since=nope", None, b""),
            400,
            "subscribe cursor",
        ),
        (
            with_origin("GET", "/subscribe?room=a.b", None, b""),
            400,
            "subscribe room",
        ),
        (with_origin("GET", "/nope", None, b""), 404, "404"),
        (with_origin("GET", "/publish", None, b""), 405, "405"),
        (
            with_origin("POST", "/subscribe", text, b"x"),
            405,
            "405 subscribe",
        ),
        (
            with_origin("GET", "/subscribe?room=b", None, b""),
            204,
            "poll timed out",
        ),
    ];
    // Both rooms in use (an event stream open in each): a third room is refused. (A room that is
    // not in use would make way for it, issue 12.)
    let mut streams = Vec::new();
    for room in ["a", "b"] {
        let mut c = Client::connect(s.addr());
        c.send_request("GET", &format!("/events?room={room}"), &[], b"");
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut c.stream(), &mut first).expect("the stream opens");
        streams.push(c);
    }
    let mut cases = cases;
    cases.push((
        with_origin("GET", "/subscribe?room=c&since=0", None, b""),
        503,
        "too many rooms",
    ));
    for (r, status, what) in &cases {
        if *status == 204 {
            r.assert_status(204);
        } else {
            r.assert_error(*status);
        }
        assert_cors(r, what);
    }
    let ok = with_origin("GET", "/subscribe?room=a&since=0", None, b"");
    ok.assert_status(200);
    assert_cors(&ok, "subscribe 200");
    // A HEAD error answered to the origin: the headers, no body.
    let mut c = Client::connect(s.addr());
    c.send(
        format!("HEAD /nope HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n\r\n").as_bytes(),
    );
    let head = c.read_head_response();
    head.assert_status(404);
    assert_cors(&head, "HEAD 404");
    // Errors of the HTTP layer whose head was read carry them too (they close the connection).
    for (fields, status) in [
        ("Content-Length: 100000\r\n", 413),
        ("Transfer-Encoding: chunked\r\n\r\nfffffff\r\n", 413),
        ("Expect: magic\r\nContent-Length: 1\r\n", 417),
        ("Transfer-Encoding: gzip\r\n", 501),
        ("Content-Length: 1\r\nContent-Length: 2\r\n", 400),
    ] {
        let mut c = Client::connect(s.addr());
        let req = format!(
            "POST /publish?room=a HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n{fields}\r\n"
        );
        c.send(req.as_bytes());
        let r = c.read_response();
        r.assert_error(status).assert_closes();
        assert_cors(&r, &format!("HTTP-layer {status}"));
    }
    // Another origin gets none of it.
    let r = s.exchange("GET", "/nope", &[("Origin", "http://other.example")], b"");
    r.assert_error(404);
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
}

fn curl_d_bodies_are_stored_as_typed(kind: Kind) {
    let s = Server::start(kind);
    for (i, (sent, stored)) in [
        ("c++ is 100% fun", "c++ is 100% fun"),
        ("a+b", "a+b"),
        ("is 2+2=4?", "is 2+2=4?"),
        ("hello", "hello"),
        ("message", "message"),
        ("message=hi+there%21", "hi there!"),
        ("message=a%2Bb&id=k1", "a+b"),
    ]
    .into_iter()
    .enumerate()
    {
        let room = format!("d{i}");
        // What `curl -d` sends.
        let r = s.exchange(
            "POST",
            &format!("/publish?room={room}"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            sent.as_bytes(),
        );
        r.assert_status(200);
        let got = s.get(&format!("/subscribe?room={room}&since=0"));
        assert_eq!(got.text(), stored, "curl -d {sent:?}");
    }
    // A real form without a message is still refused.
    s.exchange(
        "POST",
        "/publish?room=d",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"id=1",
    )
    .assert_error(400);
}

fn the_page_has_an_icon(kind: Kind) {
    let s = Server::start(kind);
    let page = s.get("/");
    page.assert_status(200);
    assert!(
        page.text()
            .contains(r#"<link rel="icon" href="/favicon.svg""#),
        "the page links its icon"
    );
    let svg = s.get("/favicon.svg");
    svg.assert_status(200)
        .assert_type("image/svg+xml")
        .assert_dynamic();
    assert!(svg.text().starts_with("<svg"), "{svg}");
    assert!(svg
        .must_header("Content-Security-Policy")
        .starts_with("default-src 'self'"));
    let ico = s.get("/favicon.ico");
    ico.assert_status(200).assert_type("image/svg+xml");
    assert_eq!(ico.body, svg.body);
}
