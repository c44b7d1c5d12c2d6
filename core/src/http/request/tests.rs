//! Tests of the request reader. Every fixture runs three ways (h11's rule): the whole input at
//! once, one byte at a time, and followed by the first bytes of another request.

use proptest::prelude::*;

use crate::http::response::Persist;
use crate::http::{HttpError, Limits, Method, ReadEvent, Request, RequestReader, Version};

type Outcome = Result<Request, HttpError>;

/// Feeds `chunks` one after the other, draining events after each; stops at the first error.
/// Returns the outcomes (requests and the error, without `Continue`), how many `Continue`s came,
/// and the reader.
fn drive(chunks: &[&[u8]], limits: Limits) -> (Vec<Outcome>, usize, RequestReader) {
    let mut reader = RequestReader::new();
    let mut out = Vec::new();
    let mut continues = 0;
    'feed: for chunk in chunks {
        reader.push(chunk);
        while let Some(ev) = reader.next_event(&limits) {
            match ev {
                Ok(ReadEvent::Continue) => continues += 1,
                Ok(ReadEvent::Request(r)) => out.push(Ok(r)),
                Err(e) => {
                    out.push(Err(e));
                    break 'feed;
                }
            }
        }
    }
    (out, continues, reader)
}

/// Runs `input` whole, byte by byte and followed by the start of another request; all three
/// must give the same outcomes. Returns them.
fn three_ways(input: &[u8], limits: Limits) -> Vec<Outcome> {
    let (whole, _, whole_reader) = drive(&[input], limits);

    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (split, _, _) = drive(&bytes, limits);
    assert_eq!(whole, split, "byte-by-byte differs from whole");

    let tail = b"GET /next HTTP/1.1\r\nHo";
    let mut with_tail = input.to_vec();
    with_tail.extend_from_slice(tail);
    let (trailed, _, reader) = drive(&[&with_tail], limits);
    assert_eq!(whole, trailed, "trailing bytes changed the outcome");
    assert_eq!(
        whole_reader.is_failed(),
        matches!(whole.last(), Some(Err(_))),
        "the reader has failed exactly when it reported an error"
    );
    if !whole_reader.is_failed() && !whole_reader.in_request() {
        // The next request's bytes are all still there, none consumed.
        assert_eq!(reader.buffered(), tail.len());
    }
    whole
}

fn one(input: &[u8]) -> Request {
    let out = three_ways(input, Limits::default());
    assert_eq!(out.len(), 1, "expected one request from {input:?}: {out:?}");
    out.into_iter().next().unwrap().unwrap()
}

fn one_with(input: &[u8], limits: Limits) -> Request {
    let out = three_ways(input, limits);
    assert_eq!(out.len(), 1, "expected one request from {input:?}: {out:?}");
    out.into_iter().next().unwrap().unwrap()
}

fn err(input: &[u8]) -> HttpError {
    err_with(input, Limits::default())
}

fn err_with(input: &[u8], limits: Limits) -> HttpError {
    let out = three_ways(input, limits);
    match out.last() {
        Some(Err(e)) => *e,
        other => panic!("expected an error from {input:?}, got {other:?}"),
    }
}

#[test]
fn simple_get() {
    let r = one(b"GET /subscribe?room=a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.method, Method::Get);
    assert_eq!(r.target, "/subscribe?room=a");
    assert_eq!(r.path(), "/subscribe");
    assert_eq!(r.query(), Some("room=a"));
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.headers.host.as_deref(), Some("x"));
    assert!(r.keep_alive);
    assert!(r.body.is_empty());
}

#[test]
fn every_method_is_told_apart() {
    for (name, method) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("PATCH", Method::Patch),
        ("BREW", Method::Other),
        ("get", Method::Other),
    ] {
        let r = one(format!("{name} / HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.method, method, "{name}");
    }
}

#[test]
fn headers_we_use_are_kept() {
    let r = one(
        b"POST /publish HTTP/1.1\r\nHost: h:8080\r\nContent-Type: text/plain\r\n\
          Accept: text/html\r\naccept: application/json\r\nOrigin: http://h:8080\r\n\
          Last-Event-ID: abc-3\r\nX-Other: y\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(r.headers.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        r.headers.accept.as_deref(),
        Some("text/html, application/json")
    );
    assert_eq!(r.headers.origin.as_deref(), Some("http://h:8080"));
    assert_eq!(r.headers.last_event_id.as_deref(), Some("abc-3"));
    assert_eq!(r.body, b"hi");
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let r = one(b"GET / HTTP/1.1\nHost: x\n\n");
    assert_eq!(r.target, "/");
}

#[test]
fn leading_empty_lines_are_ignored() {
    let r = one(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.target, "/");
}

#[test]
fn content_length_body() {
    let r = one(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.body, b"hello");
}

#[test]
fn repeated_equal_content_length_is_accepted() {
    let r =
        one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc");
    assert_eq!(r.body, b"abc");
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let out = three_ways(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz\
          POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n\
          GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
        Limits::default(),
    );
    let targets: Vec<_> = out
        .iter()
        .map(|r| r.as_ref().unwrap().target.clone())
        .collect();
    assert_eq!(targets, ["/a", "/b", "/c", "/d"]);
    assert_eq!(out[1].as_ref().unwrap().body, b"xyz");
    assert_eq!(out[2].as_ref().unwrap().body, b"q");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let r = one(
        b"POST /publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n\
          5;name=value\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
    );
    assert_eq!(r.body, b"hello world");
}

#[test]
fn chunked_hex_sizes() {
    let mut input =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1A\r\n".to_vec();
    input.extend_from_slice(&[b'z'; 26]);
    input.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(one(&input).body, vec![b'z'; 26]);
}

#[test]
fn invalid_chunk_sizes_are_400() {
    for size in [&b"zz"[..], b"", b"-1", b"1 2", b"0x5", b"1\r", b"1 ;x\r"] {
        let mut input =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        input.extend_from_slice(size);
        input.extend_from_slice(b"\r\nabcde\r\n0\r\n\r\n");
        let e = err(&input);
        assert_eq!(
            (e.status, e.reason),
            (400, "invalid chunk size"),
            "size {size:?}"
        );
    }
}

#[test]
fn chunk_data_without_crlf_is_400() {
    let e = err(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(e.status, 400);
}

#[test]
fn a_bare_lf_may_end_chunk_data() {
    let r =
        one(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\n0\r\n\r\n");
    assert_eq!(r.body, b"q");
}

#[test]
fn a_chunked_body_is_consumed_to_its_last_byte() {
    // Nothing of the request may stay behind in the buffer: the next request would begin
    // with it (the server would wait for a head instead of idling).
    for end in [
        &b"0\r\nX: 1\r\n\r\n"[..],
        b"0\r\n\r\n",
        b"0\n\n",
        b"0\nX: 1\n\n",
    ] {
        let mut input =
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n".to_vec();
        input.extend_from_slice(end);
        let (out, _, reader) = drive(&[&input], Limits::default());
        assert_eq!(out.len(), 1, "{end:?}");
        assert_eq!(out[0].as_ref().unwrap().body, b"q");
        assert_eq!(reader.buffered(), 0, "{end:?}");
        assert!(!reader.in_request(), "{end:?}");
    }
}

/// A chunk-size line (extensions included) of `len` bytes before its `\n`.
fn with_size_line(len: usize) -> Vec<u8> {
    let mut input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    input.resize(input.len() + len - 3, b'x');
    input.extend_from_slice(b"\r\nq\r\n0\r\n\r\n");
    input
}

#[test]
fn a_chunk_size_line_may_be_1024_bytes_and_no_longer() {
    // Exactly the cap before the `\n`: accepted, whole and byte by byte (where the line's first
    // 1024 bytes arrive without their `\n`).
    assert_eq!(one(&with_size_line(1024)).body, b"q");
    // One byte more is 400, whether the `\n` has arrived (whole) or not yet (byte by byte).
    let e = err(&with_size_line(1025));
    assert_eq!((e.status, e.reason), (400, "chunk size line too long"));
    // 1025 bytes without a `\n` at all, in one read.
    let mut input = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    input.resize(input.len() + 1023, b'x');
    let e = err(&input);
    assert_eq!((e.status, e.reason), (400, "chunk size line too long"));
}

/// A chunked body whose trailer section is one field line of `len` bytes before its `\n`,
/// then the empty line (or, with `end` false, only the first `len` bytes, without a `\n`).
fn with_trailer_line(len: usize, end: bool) -> Vec<u8> {
    let mut input =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n".to_vec();
    let start = input.len();
    input.extend_from_slice(b"X: ");
    input.resize(start + len - 1, b'x');
    if end {
        input.extend_from_slice(b"\r\n\r\n");
    } else {
        input.push(b'x');
    }
    input
}

#[test]
fn the_trailer_section_may_fill_the_head_cap_and_no_more() {
    let max_head = Limits::default().max_head;
    // A field line of `max_head - 2` bytes and its `\n`, then the empty line's `\r\n`: the
    // section is exactly the cap. Accepted, whole and byte by byte (where the empty line's `\r`
    // arrives alone, exactly at the cap).
    assert_eq!(one(&with_trailer_line(max_head - 2, true)).body, b"q");
    // One byte more is 431.
    let e = err(&with_trailer_line(max_head - 1, true));
    assert_eq!((e.status, e.reason), (431, "trailer section too large"));
    // More than the cap without a `\n`, in one read.
    let e = err(&with_trailer_line(max_head + 1, false));
    assert_eq!((e.status, e.reason), (431, "trailer section too large"));
}

#[test]
fn chunked_body_over_the_cap_is_413() {
    let limits = Limits {
        max_body: 8,
        ..Limits::default()
    };
    let e = err_with(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
        limits,
    );
    assert_eq!(e.status, 413);
    // A single huge chunk size is refused from the size line alone.
    let e = err_with(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n",
        limits,
    );
    assert_eq!(e.status, 413);
    // So is one that fits in a usize but not beside the body so far.
    let e = err_with(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\nffffffffffffffff\r\n",
        limits,
    );
    assert_eq!(e.status, 413);
}

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let e = err(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(e.status, 400);
}

#[test]
fn differing_content_lengths_are_400() {
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
            .status,
        400
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd").status,
        400
    );
}

#[test]
fn invalid_content_length_is_400() {
    for v in [
        "-1",
        "+3",
        "3a",
        "",
        "0x10",
        "99999999999999999999",
        "00000000000000000003",
    ] {
        let input = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n\r\n");
        let e = err(input.as_bytes());
        assert_eq!(
            (e.status, e.reason),
            (400, "invalid Content-Length"),
            "Content-Length {v:?}"
        );
    }
    // Nineteen digits are read (twenty are not, above).
    let r = one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000000000000003\r\n\r\nabc");
    assert_eq!(r.body, b"abc");
}

#[test]
fn other_transfer_codings_are_501() {
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").status,
        501
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: deflate\r\n\r\n").status,
        501
    );
}

#[test]
fn chunked_not_last_is_400() {
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n").status,
        400
    );
}

#[test]
fn transfer_encoding_in_http10_is_400() {
    assert_eq!(
        err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").status,
        400
    );
}

#[test]
fn http2_preface_is_505() {
    let e = err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!(e.status, 505);
}

#[test]
fn other_versions_are_505() {
    assert_eq!(err(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n").status, 505);
    assert_eq!(err(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n").status, 505);
}

#[test]
fn an_error_displays_its_status_and_reason() {
    assert_eq!(err(b"\x01\r\n\r\n").to_string(), "400 malformed request");
}

#[test]
fn garbage_is_400() {
    assert_eq!(err(b"\x00\x01\x02 hello\r\n\r\n").status, 400);
    assert_eq!(err(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").status, 400);
    assert_eq!(
        err(b"GET ftp://example.com/ HTTP/1.1\r\nHost: x\r\n\r\n").status,
        400
    );
}

#[test]
fn an_asterisk_target_is_for_options_only() {
    assert_eq!(one(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").target, "*");
    for bad in [
        &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"OPTIONS x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS *x HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let e = err(bad);
        assert_eq!(
            (e.status, e.reason),
            (400, "request target must be a path"),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn absolute_form_targets_are_accepted() {
    // RFC 9112 §3.2.2: path and query from the target, the authority in place of Host.
    let r = one(b"GET http://Chat.Example:8080/subscribe?room=a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.target, "/subscribe?room=a");
    assert_eq!(r.path(), "/subscribe");
    assert_eq!(r.headers.host.as_deref(), Some("Chat.Example:8080"));
    let r = one(b"GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (r.target.as_str(), r.headers.host.as_deref()),
        ("/", Some("h"))
    );
    let r = one(b"GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.target, "/?x=1");
    for bad in [
        &b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(err(bad).status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn empty_lines_begin_a_request() {
    // The head deadline runs from the first byte: a CRLF is not an idle connection.
    let mut reader = RequestReader::new();
    let limits = Limits::default();
    assert!(!reader.in_request());
    reader.push(b"\r\n");
    assert!(reader.next_event(&limits).is_none());
    assert_eq!(reader.buffered(), 0);
    assert!(reader.in_request());
    reader.push(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n");
    assert!(reader.next_event(&limits).is_none());
    assert!(reader.head_complete() && reader.in_request());
    reader.push(b"ok");
    assert!(matches!(
        reader.next_event(&limits),
        Some(Ok(ReadEvent::Request(_)))
    ));
    assert!(!reader.in_request() && !reader.head_complete());
}

#[test]
fn missing_or_repeated_host_in_http11_is_400() {
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status,
        400
    );
    // HTTP/1.0 needs no Host.
    one(b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn head_over_the_cap_is_431_without_waiting_for_its_end() {
    let limits = Limits {
        max_head: 100,
        ..Limits::default()
    };
    let mut input = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    input.extend_from_slice(&[b'a'; 200]);
    // No end of head ever arrives: the cap alone decides.
    assert_eq!(err_with(&input, limits).status, 431);
    input.extend_from_slice(b"\r\n\r\n");
    assert_eq!(err_with(&input, limits).status, 431);
}

#[test]
fn too_many_headers_is_431() {
    let limits = Limits {
        max_headers: 4,
        ..Limits::default()
    };
    let ok = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_eq!(three_ways(ok, limits).len(), 1);
    let e = err_with(
        b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        limits,
    );
    assert_eq!(e.status, 431);
}

#[test]
fn long_uri_is_414() {
    let limits = Limits {
        max_uri: 50,
        ..Limits::default()
    };
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(60));
    assert_eq!(err_with(long.as_bytes(), limits).status, 414);
    // Exactly the cap is allowed, one byte more is not.
    let at_cap = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(49));
    let out = three_ways(at_cap.as_bytes(), limits);
    assert_eq!(out[0].as_ref().unwrap().target.len(), 50);
    let over = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(50));
    assert_eq!(err_with(over.as_bytes(), limits).status, 414);
    // A request line that never ends is refused once it is clearly too long.
    let endless = format!("GET /{}", "a".repeat(500));
    assert_eq!(err_with(endless.as_bytes(), limits).status, 414);
}

#[test]
fn the_cap_reported_does_not_depend_on_arrival() {
    // Found by the `split` fuzz target. The head cap (64) is passed before the request-line cap
    // (16 + slack): byte by byte that is 431, so whole it must be 431 too, not 414.
    let limits = Limits {
        max_head: 64,
        max_uri: 16,
        ..Limits::default()
    };
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
    assert_eq!(err_with(long.as_bytes(), limits).status, 431);
    // A request line over its cap inside a head under its cap: byte by byte that is 414 before
    // the line ends, so whole it must not be parsed (here it would have been a request).
    let limits = Limits {
        max_head: 1000,
        max_uri: 16,
        ..Limits::default()
    };
    let long_method = format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "X".repeat(100));
    assert_eq!(err_with(long_method.as_bytes(), limits).status, 414);
    // The line cap (16 + 64 slack) passed first, then the head cap (200): 414, also whole.
    let limits = Limits {
        max_head: 200,
        max_uri: 16,
        ..Limits::default()
    };
    let both = format!(
        "{} / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "X".repeat(100),
        "a".repeat(200)
    );
    assert_eq!(err_with(both.as_bytes(), limits).status, 414);
}

#[test]
fn the_request_line_and_head_caps_hold_exactly() {
    let limits = Limits {
        max_head: 200,
        max_uri: 16,
        ..Limits::default()
    };
    // The request line up to its `\n` (its `\r` included) may be `max_uri` + 64 bytes: a long
    // method (" / HTTP/1.1\r" is 12 bytes) fills it.
    let line =
        |method_len: usize| format!("{} / HTTP/1.1\r\nHost: x\r\n\r\n", "M".repeat(method_len));
    let out = three_ways(line(80 - 12).as_bytes(), limits);
    assert_eq!(out[0].as_ref().unwrap().method, Method::Other);
    assert_eq!(err_with(line(80 - 11).as_bytes(), limits).status, 414);
    // The head, its empty line included, may be `max_head` bytes.
    let head = |len: usize| {
        let mut h = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        h.resize(len - 4, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    assert_eq!(one_with(&head(200), limits).target, "/");
    assert_eq!(err_with(&head(201), limits).status, 431);
}

#[test]
fn declared_body_over_the_cap_is_413_before_any_body_byte() {
    let limits = Limits {
        max_body: 10,
        ..Limits::default()
    };
    let e = err_with(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
        limits,
    );
    assert_eq!(e.status, 413);
    let ok = three_ways(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
        limits,
    );
    assert_eq!(ok.len(), 1);
}

#[test]
fn expect_100_continue_is_signalled_once_before_the_body() {
    let head =
        b"POST /publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let (out, continues, _) = drive(&[head, b"hel", b"lo"], Limits::default());
    assert_eq!(continues, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].as_ref().unwrap().body, b"hello");
    // The whole body already here: no interim response is needed.
    let mut whole = head.to_vec();
    whole.extend_from_slice(b"hello");
    let (_, continues, _) = drive(&[&whole], Limits::default());
    assert_eq!(continues, 0);
    // A body over the cap gets its 413 instead of a 100.
    let big =
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n";
    let (out, continues, _) = drive(&[big], Limits::default());
    assert_eq!((continues, out[0].as_ref().unwrap_err().status), (0, 413));
}

#[test]
fn unknown_expectation_is_417() {
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n").status,
        417
    );
}

#[test]
fn keep_alive_rules() {
    assert!(one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive);
    assert!(!one(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!one(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close\r\n\r\n").keep_alive);
    assert!(!one(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    assert_eq!(
        Persist::for_request(Version::Http10, true),
        Persist::KeepAlive10
    );
}

#[test]
fn after_an_error_nothing_more_is_read() {
    let mut reader = RequestReader::new();
    let limits = Limits::default();
    reader.push(b"BAD\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reader.next_event(&limits).unwrap().unwrap_err().status, 400);
    assert!(reader.is_failed());
    assert_eq!(reader.next_event(&limits), None);
    reader.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reader.next_event(&limits), None);
    assert_eq!(reader.buffered(), 0);
}

#[test]
fn buffer_is_released_between_requests() {
    let mut reader = RequestReader::new();
    reader.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(matches!(
        reader.next_event(&Limits::default()),
        Some(Ok(ReadEvent::Request(_)))
    ));
    assert_eq!(reader.buffered(), 0);
    assert!(!reader.in_request());
    // The buffer is kept for the connection's next request, and given back by `release`.
    assert!(reader.buf.capacity() > 0);
    reader.release();
    assert_eq!(reader.buf.capacity(), 0);
    // Not while part of a request is buffered.
    reader.push(b"GET / HT");
    reader.release();
    assert_eq!(reader.buffered(), 8);
}

#[test]
fn a_buffer_up_to_4_kib_is_kept_for_the_next_request_a_larger_one_is_freed() {
    // A request of `len` bytes (a body fills it up), alone in the buffer.
    let request = |len: usize| {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0000\r\n\r\n".len();
        let body = len - head;
        let mut r =
            format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {body:04}\r\n\r\n").into_bytes();
        r.resize(len, b'b');
        r
    };
    for (len, kept) in [(100, true), (4096, true), (4097, false), (10_000, false)] {
        let mut reader = RequestReader::new();
        reader.push(&request(len));
        let capacity = reader.buf.capacity();
        assert_eq!(capacity, len, "a Vec allocates exactly what one push needs");
        assert!(matches!(
            reader.next_event(&Limits::default()),
            Some(Ok(ReadEvent::Request(_)))
        ));
        // Nothing of it stays behind.
        assert_eq!(reader.buf.len(), 0, "{len}");
        assert_eq!(
            reader.buf.capacity(),
            if kept { capacity } else { 0 },
            "{len}"
        );
    }
}

#[test]
fn consumed_bytes_are_dropped_as_a_pipeline_goes_on() {
    // Each read brings a request and a half, so a partial request is always buffered: the
    // bytes already consumed must still be dropped (once they are half the buffer), or a
    // long pipeline would grow the buffer without end.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let stream = request.repeat(300);
    let mut reader = RequestReader::new();
    let mut answered = 0;
    for read in stream.chunks(request.len() * 3 / 2) {
        reader.push(read);
        while let Some(ev) = reader.next_event(&Limits::default()) {
            assert!(matches!(ev, Ok(ReadEvent::Request(_))));
            answered += 1;
        }
        assert!(
            reader.buf.len() <= 4 * request.len(),
            "{} bytes buffered after {answered} requests",
            reader.buf.len()
        );
    }
    assert_eq!(answered, 300);
}

#[test]
fn byte_at_a_time_head_search_is_linear() {
    // 16,000 header bytes one at a time: each push searches only the new bytes. With a
    // quadratic search this would take ~128M steps; the test just shows it completes and parses.
    let mut input = b"GET / HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 16_000));
    input.extend_from_slice(b"\r\n\r\n");
    let limits = Limits {
        max_head: 20_000,
        ..Limits::default()
    };
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let (out, _, _) = drive(&bytes, limits);
    assert_eq!(out.len(), 1);
}

// --- property tests -----------------------------------------------------------------------

fn arb_request() -> impl Strategy<Value = Vec<u8>> {
    let target = "/[a-z]{0,8}(\\?[a-z]=[a-z0-9]{0,5})?";
    let body = proptest::collection::vec(any::<u8>(), 0..40);
    (0..4u8, target, body, any::<bool>(), 1..4usize).prop_map(|(kind, target, body, ka, chunks)| {
        let mut out = Vec::new();
        match kind {
            0 => out
                .extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()),
            1 => {
                out.extend_from_slice(
                    format!(
                        "POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&body);
            }
            2 => {
                out.extend_from_slice(
                    format!(
                        "POST {target} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    )
                    .as_bytes(),
                );
                let per = body.len().div_ceil(chunks).max(1);
                for part in body.chunks(per) {
                    out.extend_from_slice(format!("{:x};ext=1\r\n", part.len()).as_bytes());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
            }
            _ => {
                let conn = if ka { "Connection: keep-alive\r\n" } else { "" };
                out.extend_from_slice(
                    format!("GET {target} HTTP/1.0\r\n{conn}Expect: 100-continue\r\n\r\n")
                        .as_bytes(),
                );
            }
        }
        out
    })
}

proptest! {
    /// Any split of a stream of valid pipelined requests yields the same requests as the whole.
    #[test]
    fn any_split_gives_the_same_requests(
        requests in proptest::collection::vec(arb_request(), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = requests.concat();
        let (whole, _, _) = drive(&[&stream], Limits::default());
        prop_assert_eq!(whole.len(), requests.len());
        prop_assert!(whole.iter().all(|r| r.is_ok()));

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&stream[last..p]);
            last = p;
        }
        chunks.push(&stream[last..]);
        let (split, _, reader) = drive(&chunks, Limits::default());
        prop_assert_eq!(whole, split);
        prop_assert_eq!(reader.buffered(), 0);
    }

    /// Arbitrary bytes, however split, never panic the reader, and every outcome is a request
    /// or an error with a 4xx/5xx status.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..512) {
        let cut = cut.min(data.len());
        let (whole, _, _) = drive(&[&data], Limits::default());
        let (split, _, _) = drive(&[&data[..cut], &data[cut..]], Limits::default());
        prop_assert_eq!(&whole, &split);
        for o in whole {
            if let Err(e) = o {
                prop_assert!((400..600).contains(&e.status));
            }
        }
    }
}
