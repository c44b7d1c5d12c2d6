//! Server-Sent Events (`GET /events`, docs/HTTP.md) against both binaries over real TCP: a small
//! event-stream client that de-chunks and parses the stream itself, and the `eventsource` npm
//! package (tests/browser/eventsource.mjs) as the third-party client.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parlor_tests::{both, eventually, parse_metrics, server::workspace_root, Kind, Server};
use parlor_tests::{request, PROMPT, SETUP_COMMAND};

both!(
    stream_head_and_live_events,
    resume_by_last_event_id_and_since,
    gap_and_json_events,
    heartbeat_and_max_age,
    http10_is_close_delimited,
    shutdown_ends_streams,
    metrics_count_streams,
    pipelined_publishes_reach_every_stream_whole_and_in_order,
    eventsource_npm_client,
);

/// One event as an `EventSource` dispatches it; comments have `kind` `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Event {
    kind: String,
    id: Option<String>,
    data: String,
    retry: Option<u64>,
}

/// An event-stream client: reads the head, then de-chunks (HTTP/1.1) and parses events as they
/// arrive.
struct Sse {
    stream: TcpStream,
    head: String,
    chunked: bool,
    /// Raw bytes after the head not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body bytes not yet parsed into events.
    body: Vec<u8>,
    /// The terminating chunk arrived.
    ended: bool,
    /// The server closed the connection.
    closed: bool,
}

impl Sse {
    fn open(s: &Server, target: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open_version(s, target, headers, "HTTP/1.1")
    }

    fn open_version(s: &Server, target: &str, headers: &[(&str, &str)], version: &str) -> Sse {
        let mut stream = TcpStream::connect(s.addr()).expect("connect");
        let mut req = format!("GET {target} {version}\r\nHost: {}\r\n", s.host());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).expect("send");
        let mut sse = Sse {
            stream,
            head: String::new(),
            chunked: false,
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
            closed: false,
        };
        let deadline = Instant::now() + PROMPT;
        let end = loop {
            if let Some(i) = sse.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                sse.fill(deadline),
                "no head: {:?}",
                String::from_utf8_lossy(&sse.raw)
            );
        };
        sse.head = String::from_utf8(sse.raw.drain(..end).collect()).expect("UTF-8 head");
        sse.chunked = sse.header("Transfer-Encoding") == Some("chunked");
        sse
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(": ")?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    /// Reads once more; false on timeout or close.
    fn fill(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline || self.closed {
            return false;
        }
        self.stream.set_read_timeout(Some(deadline - now)).unwrap();
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.closed = true;
                false
            }
        }
    }

    /// Moves complete chunks (or everything, close-delimited) from `raw` to `body`.
    fn dechunk(&mut self) {
        if !self.chunked {
            self.body.append(&mut self.raw);
            return;
        }
        loop {
            let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.raw[..line]).expect("chunk size");
            let size = usize::from_str_radix(size_text, 16).expect("hex chunk size");
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            let chunk: Vec<u8> = self.raw.drain(..line + 2 + size + 2).collect();
            assert_eq!(
                &chunk[line + 2 + size..],
                b"\r\n",
                "chunk not ended by CRLF"
            );
            if size == 0 {
                self.ended = true;
                assert!(self.raw.is_empty(), "bytes after the last chunk");
                return;
            }
            let data = &chunk[line + 2..line + 2 + size];
            assert!(data.ends_with(b"\n\n"), "a chunk is not whole events");
            self.body.extend_from_slice(data);
        }
    }

    /// The next event (or comment), waiting up to `within`.
    fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            self.dechunk();
            if let Some(e) = self.parse_one() {
                return Some(e);
            }
            if self.ended || !self.fill(deadline) {
                self.dechunk();
                return self.parse_one();
            }
        }
    }

    /// The next event that is not a comment.
    #[track_caller]
    fn event(&mut self) -> Event {
        loop {
            let e = self
                .next(PROMPT)
                .unwrap_or_else(|| panic!("no event; head {:?}", self.head));
            if e.kind != ":" {
                return e;
            }
        }
    }

    /// Parses one block (up to a blank line) from `body`.
    fn parse_one(&mut self) -> Option<Event> {
        let text = std::str::from_utf8(&self.body).expect("UTF-8 events");
        let end = text.find("\n\n")? + 2;
        let block: String = text[..end].to_owned();
        self.body.drain(..end);
        if let Some(comment) = block.strip_prefix(':') {
            return Some(Event {
                kind: ":".into(),
                id: None,
                data: comment.trim().into(),
                retry: None,
            });
        }
        let mut e = Event {
            kind: "message".into(),
            id: None,
            data: String::new(),
            retry: None,
        };
        let mut first = true;
        for line in block.lines().filter(|l| !l.is_empty()) {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => e.kind = value.into(),
                "id" => e.id = Some(value.into()),
                "retry" => e.retry = Some(value.parse().expect("retry ms")),
                "data" => {
                    if !first {
                        e.data.push('\n');
                    }
                    e.data.push_str(value);
                    first = false;
                }
                other => panic!("unknown field {other:?} in {block:?}"),
            }
        }
        Some(e)
    }

    /// Waits for the server to close the connection.
    #[track_caller]
    fn expect_end(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.closed {
            self.dechunk();
            while self.parse_one().is_some() {}
            if !self.fill(deadline) && !self.closed {
                panic!("the stream did not end within {within:?}");
            }
        }
        self.dechunk();
    }
}

fn message(e: &Event) -> (String, String) {
    assert_eq!(e.kind, "message", "{e:?}");
    (e.id.clone().expect("an id"), e.data.clone())
}

fn stream_head_and_live_events(kind: Kind) {
    let s = Server::start(kind);
    let mut sse = Sse::open(&s, "/events?room=live", &[]);
    assert!(sse.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", sse.head);
    assert_eq!(
        sse.header("Content-Type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(sse.header("Cache-Control"), Some("no-store"));
    assert_eq!(sse.header("X-Accel-Buffering"), Some("no"));
    assert_eq!(sse.header("Content-Length"), None);
    assert!(sse.chunked);
    let ready = sse.event();
    assert_eq!(ready.kind, "ready");
    assert_eq!(ready.retry, Some(3000));
    let (epoch, seq) = parlor_tests::split_cursor(&ready.data);
    assert_eq!(seq, 0);
    assert_eq!(ready.id.as_deref(), Some(ready.data.as_str()));
    let c1 = s.publish("live", "one");
    let c2 = s.publish("live", "two\nlines");
    assert!(c1.starts_with(epoch));
    assert_eq!(message(&sse.event()), (c1, "one".into()));
    assert_eq!(message(&sse.event()), (c2, "two\nlines".into()));
    // Another room's messages do not arrive.
    s.publish("elsewhere", "no");
    let c3 = s.publish("live", "three");
    assert_eq!(message(&sse.event()), (c3, "three".into()));
}

fn resume_by_last_event_id_and_since(kind: Kind) {
    let s = Server::start(kind);
    let cursors: Vec<String> = (1..=4).map(|i| s.publish("r", &format!("m{i}"))).collect();
    let mut sse = Sse::open(&s, &format!("/events?room=r&since={}", cursors[1]), &[]);
    let ready = sse.event();
    assert_eq!((ready.kind.as_str(), ready.id), ("ready", None));
    assert_eq!(ready.data, cursors[3]);
    assert_eq!(message(&sse.event()), (cursors[2].clone(), "m3".into()));
    assert_eq!(message(&sse.event()), (cursors[3].clone(), "m4".into()));
    let c5 = s.publish("r", "m5");
    assert_eq!(message(&sse.event()), (c5.clone(), "m5".into()));
    drop(sse);
    // EventSource reconnecting: Last-Event-ID wins over the URL's since.
    let c6 = s.publish("r", "m6");
    let mut sse = Sse::open(
        &s,
        &format!("/events?room=r&since={}", cursors[0]),
        &[("Last-Event-ID", &c5)],
    );
    assert_eq!(sse.event().kind, "ready");
    assert_eq!(message(&sse.event()), (c6, "m6".into()));
    if let Some(e) = sse.next(Duration::from_millis(200)) {
        panic!("nothing more expected, got {e:?}");
    }
}

fn gap_and_json_events(kind: Kind) {
    let s = Server::with_args(kind, &["--history-messages", "2"]);
    let c1 = s.publish("g", "m1");
    for i in 2..=5 {
        s.publish("g", &format!("m{i}"));
    }
    let mut sse = Sse::open(&s, &format!("/events?room=g&since={c1}&format=json"), &[]);
    assert_eq!(sse.event().kind, "ready");
    let gap = sse.event();
    assert_eq!((gap.kind.as_str(), gap.data.as_str()), ("gap", "2"));
    let e = sse.event();
    let json: serde_json::Value = serde_json::from_str(&e.data).expect("JSON data");
    assert_eq!(json["text"], "m4");
    assert_eq!(json["cursor"].as_str(), e.id.as_deref());
    assert!(json["time"].as_u64().is_some());
    // A cursor of another epoch: reset first.
    let mut sse = Sse::open(&s, "/events?room=g", &[("Last-Event-ID", "zzzzz-3")]);
    assert_eq!(sse.event().kind, "ready");
    assert_eq!(sse.event().kind, "reset");
    assert_eq!(sse.event().kind, "gap");
    assert_eq!(sse.event().data, "m4");
    // Bad requests are answered like the other routes.
    s.get("/events?room=no%20pe").assert_error(400);
    s.get("/events?since=garbage").assert_error(400);
    let r = s.client().exchange("HEAD", "/events", &[], b"");
    r.assert_status(405);
    assert_eq!(r.header("Allow"), Some("GET"));
}

fn heartbeat_and_max_age(kind: Kind) {
    let s = Server::with_args(kind, &["--sse-heartbeat", "100ms", "--sse-max-age", "1s"]);
    let mut sse = Sse::open(&s, "/events?room=hb", &[]);
    assert_eq!(sse.event().kind, "ready");
    let beat = sse.next(PROMPT).expect("a heartbeat");
    assert_eq!((beat.kind.as_str(), beat.data.as_str()), (":", "keepalive"));
    sse.expect_end(PROMPT);
    assert!(sse.ended, "the stream ended with the terminating chunk");
}

fn http10_is_close_delimited(kind: Kind) {
    let s = Server::start(kind);
    let c1 = s.publish("old", "hello");
    let mut sse = Sse::open_version(&s, "/events?room=old&since=0", &[], "HTTP/1.0");
    assert!(!sse.chunked);
    assert_eq!(sse.header("Connection"), Some("close"));
    assert_eq!(sse.event().kind, "ready");
    assert_eq!(message(&sse.event()), (c1, "hello".into()));
    let c2 = s.publish("old", "live");
    assert_eq!(message(&sse.event()), (c2, "live".into()));
}

fn shutdown_ends_streams(kind: Kind) {
    let mut s = Server::start(kind);
    let mut a = Sse::open(&s, "/events?room=s", &[]);
    let mut b = Sse::open(&s, "/events?room=s&format=json", &[]);
    assert_eq!(a.event().kind, "ready");
    assert_eq!(b.event().kind, "ready");
    s.signal("TERM");
    for sse in [&mut a, &mut b] {
        sse.expect_end(PROMPT);
        assert!(sse.ended, "ended cleanly");
    }
    assert!(s.wait_exit(PROMPT).success());
}

fn metrics_count_streams(kind: Kind) {
    let s = Server::start(kind);
    let metric = |name: &str| {
        let text = s.get("/metrics").text().to_owned();
        parse_metrics(&text)
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.value as u64)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let mut a = Sse::open(&s, "/events?room=m", &[]);
    let mut b = Sse::open(&s, "/events?room=m", &[]);
    assert_eq!(a.event().kind, "ready");
    assert_eq!(b.event().kind, "ready");
    assert_eq!(metric("parlor_sse_streams"), 2);
    s.publish("m", "x");
    a.event();
    b.event();
    assert_eq!(metric("parlor_sse_events_sent_total"), 2);
    drop(a);
    eventually(PROMPT, "the closed stream leaves the gauge", || {
        (metric("parlor_sse_streams") == 1).then_some(())
    });
}

/// Many publishes handled in one burst (pipelined on one connection, so the server takes them in
/// as few reads as it likes and writes each stream what a turn queued at once, past the
/// vectored write's buffer cap): every stream gets exactly the bytes of one event per message,
/// in publish order, each chunk whole; nothing is merged, split, lost or repeated.
fn pipelined_publishes_reach_every_stream_whole_and_in_order(kind: Kind) {
    const N: usize = 300;
    let s = Server::start(kind);
    let mut chunked = Sse::open(&s, "/events?room=burst", &[]);
    let mut json = Sse::open(&s, "/events?room=burst&format=json", &[]);
    let mut close_delimited = Sse::open_version(&s, "/events?room=burst", &[], "HTTP/1.0");
    for sse in [&mut chunked, &mut json, &mut close_delimited] {
        assert_eq!(sse.event().kind, "ready");
        assert!(
            sse.raw.is_empty() && sse.body.is_empty(),
            "only the head and ready"
        );
    }
    let mut publisher = s.client();
    let mut burst = Vec::new();
    for i in 0..N {
        let headers = [("Content-Type", "text/plain; charset=utf-8")];
        let body = format!("m{i}");
        burst.extend(request(
            "POST",
            "/publish?room=burst",
            &s.host(),
            &headers,
            body.as_bytes(),
        ));
    }
    publisher.send(&burst);
    let cursors: Vec<String> = (0..N)
        .map(|_| {
            let r = publisher.read_response();
            r.assert_status(200);
            r.cursor()
        })
        .collect();

    // The exact bytes: one chunk per event on HTTP/1.1, the bare events on HTTP/1.0.
    let mut want_chunked = Vec::new();
    let mut want_plain = Vec::new();
    for (i, c) in cursors.iter().enumerate() {
        let event = format!("id: {c}\ndata: m{i}\n\n");
        want_chunked.extend(format!("{:x}\r\n{event}\r\n", event.len()).into_bytes());
        want_plain.extend(event.into_bytes());
    }
    for (sse, want) in [
        (&mut chunked, want_chunked),
        (&mut close_delimited, want_plain),
    ] {
        let deadline = Instant::now() + PROMPT;
        while sse.raw.len() < want.len() {
            assert!(
                sse.fill(deadline),
                "{} of {} bytes",
                sse.raw.len(),
                want.len()
            );
        }
        assert!(
            sse.raw == want,
            "stream bytes differ from one event per message in order:\n{}",
            String::from_utf8_lossy(&sse.raw)
        );
        sse.raw.clear();
    }
    for (i, c) in cursors.iter().enumerate() {
        let e = json.event();
        assert_eq!(e.id.as_ref(), Some(c));
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("JSON event");
        assert_eq!(
            (v["cursor"].as_str(), v["text"].as_str()),
            (Some(c.as_str()), Some(format!("m{i}").as_str()))
        );
    }
    for sse in [&mut chunked, &mut json, &mut close_delimited] {
        if let Some(e) = sse.next(Duration::from_millis(100)) {
            panic!("nothing more expected, got {e:?}");
        }
    }
}

/// The `eventsource` npm package (what many Node services use) against the server, through a
/// reconnect forced by `--sse-max-age`: tests/browser/eventsource.mjs checks every message
/// arrives once and in order.
fn eventsource_npm_client(kind: Kind) {
    let dir = workspace_root().join("tests/browser");
    require_eventsource(&dir);
    let s = Server::with_args(kind, &["--sse-max-age", "1s", "--sse-retry", "100ms"]);
    let out = Command::new("node")
        .arg(dir.join("eventsource.mjs"))
        .arg(s.url())
        .stdin(Stdio::null())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "eventsource.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("eventsource: ok"), "{stdout}\n{stderr}");
}

fn require_eventsource(dir: &Path) {
    assert!(
        dir.join("node_modules/eventsource/package.json").is_file(),
        "the eventsource test needs {}/node_modules (npm ci): run `{SETUP_COMMAND}`",
        dir.display()
    );
}
