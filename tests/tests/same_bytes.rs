//! "Both servers answer byte for byte the same" (docs/HTTP.md): one script of requests against
//! parlor-mio and parlor-smol side by side, every response compared as raw bytes once the parts
//! that must differ are normalised (the epoch in cursors, the `time` of JSON messages).

use parlor_tests::{split_cursor, Client, Kind, Server};

const FLAGS: &[&str] = &[
    "--history-messages",
    "3",
    "--poll-timeout",
    "300ms",
    "--max-message-bytes",
    "64",
    "--max-uri-bytes",
    "256",
    "--max-head-bytes",
    "1024",
    "--max-headers",
    "8",
    "--max-body-bytes",
    "512",
    "--allow-origin",
    "http://good.example",
];

/// One step: a label, the raw bytes (`{E}` stands for the server's epoch, `{H}` for its
/// host:port), how many responses to read, and whether they answer HEAD.
struct Step {
    label: &'static str,
    bytes: String,
    responses: usize,
    head: bool,
}

fn step(label: &'static str, bytes: &str) -> Step {
    Step {
        label,
        bytes: bytes.to_owned(),
        responses: 1,
        head: false,
    }
}

fn post(label: &'static str, target: &str, content_type: &str, body: &str) -> Step {
    step(
        label,
        &format!(
            "POST {target} HTTP/1.1\r\nHost: {{H}}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn get(label: &'static str, target: &str) -> Step {
    step(
        label,
        &format!("GET {target} HTTP/1.1\r\nHost: {{H}}\r\n\r\n"),
    )
}

fn script() -> Vec<Step> {
    let mut head = get("HEAD /", "/");
    head.bytes = head.bytes.replacen("GET", "HEAD", 1);
    head.head = true;
    let long_uri = format!("/subscribe?x={}", "a".repeat(400));
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: {H}\r\n");
    for i in 0..12 {
        many.push_str(&format!("X-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let mut expect = post(
        "expect 100-continue",
        "/publish?room=b",
        "text/plain",
        "later",
    );
    // The head alone: the body ("later") is sent after the interim 100 Continue.
    expect.bytes = expect
        .bytes
        .replacen("\r\n\r\nlater", "\r\nExpect: 100-continue\r\n\r\n", 1);
    expect.responses = 2;
    vec![
        get("GET /", "/"),
        head,
        get("GET /chat.js", "/chat.js"),
        get("GET /chat.css", "/chat.css"),
        get("GET /healthz", "/healthz"),
        get("404", "/nope"),
        step("405 /", "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\n\r\n"),
        get("405 /publish", "/publish?room=a"),
        post("publish text", "/publish?room=a", "text/plain", "one"),
        post("publish form", "/publish?room=a", "application/x-www-form-urlencoded", "message=two+%E2%9C%93"),
        post("publish json", "/publish?room=a", "application/json", r#"{"message":"three","id":"k"}"#),
        post("publish json again", "/publish?room=a", "application/json", r#"{"message":"three","id":"k"}"#),
        post("publish four", "/publish?room=a", "text/plain", "four"),
        get("since=0", "/subscribe?room=a&since=0"),
        get("since=0 json", "/subscribe?room=a&since=0&format=json"),
        get("since=E-2", "/subscribe?room=a&since={E}-2"),
        get("gap", "/subscribe?room=a&since={E}-0"),
        get("gap json", "/subscribe?room=a&since={E}-0&format=json"),
        get("other epoch", "/subscribe?room=a&since=1-1"),
        get("invalid cursor", "/subscribe?room=a&since=nope"),
        get("cursor ahead", "/subscribe?room=a&since={E}-99"),
        get("bad room", "/subscribe?room=a.b"),
        get("timeout 204", "/subscribe?room=a&since={E}-4"),
        post("empty", "/publish?room=a", "text/plain", ""),
        post("bad utf-8", "/publish?room=a", "application/x-www-form-urlencoded", "message=%FF"),
        post("too large message", "/publish?room=a", "text/plain", &"x".repeat(65)),
        post("unsupported type", "/publish?room=a", "image/png", "x"),
        step(
            "foreign origin",
            "POST /publish?room=a HTTP/1.1\r\nHost: {H}\r\nOrigin: http://evil.example\r\nContent-Length: 1\r\n\r\nx",
        ),
        step(
            "body too large",
            "POST /publish?room=a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 100000\r\n\r\n",
        ),
        step("414", &format!("GET {long_uri} HTTP/1.1\r\nHost: {{H}}\r\n\r\n")),
        step("431 count", &many),
        step(
            "431 size",
            &format!("GET / HTTP/1.1\r\nHost: {{H}}\r\nX-Big: {}\r\n\r\n", "v".repeat(2000)),
        ),
        step("505", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        step(
            "501",
            "POST /publish?room=a HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
        step(
            "CL and TE",
            "POST /publish?room=a HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        step("400 garbage", "\x01\x02\r\n\r\n"),
        step("400 no host", "GET / HTTP/1.1\r\n\r\n"),
        step("HTTP/1.0", "GET /healthz HTTP/1.0\r\n\r\n"),
        step("HTTP/1.0 keep-alive", "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        step("Connection: close", "GET /healthz HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n"),
        expect,
        // HEAD answers without a body (errors too), CORS on error answers, curl -d bodies.
        head_step("HEAD 404", "HEAD /nope HTTP/1.1\r\nHost: {H}\r\n\r\n"),
        head_step("HEAD 405", "HEAD /publish HTTP/1.1\r\nHost: {H}\r\n\r\n"),
        head_step("HEAD 400", "HEAD / HTTP/1.1\r\n\r\n"),
        head_step("HEAD 414", &format!("HEAD {long_uri} HTTP/1.1\r\nHost: {{H}}\r\n\r\n")),
        head_step("HEAD /favicon.svg", "HEAD /favicon.svg HTTP/1.1\r\nHost: {H}\r\n\r\n"),
        get("GET /favicon.ico", "/favicon.ico"),
        step("404 to an allowed origin", "GET /nope HTTP/1.1\r\nHost: {H}\r\nOrigin: http://good.example\r\n\r\n"),
        step(
            "413 to an allowed origin",
            &format!(
                "POST /publish?room=a HTTP/1.1\r\nHost: {{H}}\r\nOrigin: http://good.example\r\nContent-Length: 65\r\n\r\n{}",
                "x".repeat(65)
            ),
        ),
        post("curl -d as typed", "/publish?room=c", "application/x-www-form-urlencoded", "c++ is 100% fun"),
        get("curl -d stored", "/subscribe?room=c&since=0"),
        get("other epoch json", "/subscribe?room=a&since=1-1&format=json"),
    ]
}

fn head_step(label: &'static str, bytes: &str) -> Step {
    Step {
        head: true,
        ..step(label, bytes)
    }
}

/// Runs the script; returns each step's responses, normalised.
fn run(s: &Server) -> Vec<(String, String)> {
    let epoch = {
        let c = s.publish("epoch", "x");
        split_cursor(&c).0.to_owned()
    };
    let mut out = Vec::new();
    for st in script() {
        let bytes = st
            .bytes
            .replace("{E}", &epoch)
            .replace("{H}", "parlor.test");
        let mut c = Client::connect(s.addr());
        c.send(bytes.as_bytes());
        for i in 0..st.responses {
            if st.label == "expect 100-continue" && i == 1 {
                c.send(b"later");
            }
            let r = c
                .try_read_response(st.head)
                .unwrap_or_else(|e| panic!("{}: step {:?}: {e}", s.kind().name(), st.label));
            let raw = String::from_utf8_lossy(&r.raw).into_owned();
            out.push((format!("{} #{i}", st.label), normalise(&raw, &epoch)));
        }
    }
    out
}

fn normalise(raw: &str, epoch: &str) -> String {
    let mut s = raw.replace(&format!("{epoch}-"), "EPOCH-");
    // "time":1763764000000 -> "time":0000000000000 (same length, Content-Length unchanged).
    let mut from = 0;
    while let Some(i) = s[from..].find("\"time\":") {
        let start = from + i + 7;
        let end = s[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(s.len(), |e| start + e);
        let zeros = "0".repeat(end - start);
        s.replace_range(start..end, &zeros);
        from = end;
    }
    s
}

#[test]
fn mio_and_smol_answer_byte_for_byte_the_same() {
    let mio = Server::with_args(Kind::Mio, FLAGS);
    let smol = Server::with_args(Kind::Smol, FLAGS);
    let a = run(&mio);
    let b = run(&smol);
    let mut diffs = Vec::new();
    for ((label, ra), (_, rb)) in a.iter().zip(&b) {
        if ra != rb {
            diffs.push(format!(
                "--- {label}\nparlor-mio:\n{ra}\nparlor-smol:\n{rb}",
                ra = ra.chars().take(600).collect::<String>(),
                rb = rb.chars().take(600).collect::<String>()
            ));
        }
    }
    assert_eq!(a.len(), b.len());
    assert!(
        diffs.is_empty(),
        "{} of {} responses differ:\n{}",
        diffs.len(),
        a.len(),
        diffs.join("\n")
    );
}
