//! The event loop in this process, over real loopback TCP.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{metric, request, start, wait_held, wait_until, Client};
use parlor_os::Stop;

#[test]
fn subscribe_publish_round_trip() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    sub.get("/subscribe?room=trip");
    wait_held(addr, 1);

    let mut publisher = Client::connect(addr);
    publisher.publish("trip", "hello, parlor");
    let published = publisher.response();
    assert_eq!(published.status, 200);
    let cursor = published
        .header("Parlor-Cursor")
        .expect("cursor")
        .to_string();

    let got = sub.response();
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "hello, parlor");
    assert_eq!(got.header("Parlor-Cursor"), Some(cursor.as_str()));
    assert_eq!(got.header("Cache-Control"), Some("no-store"));
    drop((sub, publisher));
    server.shutdown().unwrap();
}

/// The decades-old XMLHttpRequest loop: subscribe without a cursor, get one message, subscribe
/// again, on one keep-alive connection.
#[test]
fn classic_cursorless_loop() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    let mut publisher = Client::connect(addr);
    for i in 0..5 {
        sub.get("/subscribe?room=classic");
        wait_held(addr, 1);
        publisher.publish("classic", &format!("message {i}"));
        assert_eq!(publisher.response().status, 200);
        let got = sub.response();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("message {i}"));
    }
    drop((sub, publisher));
    server.shutdown().unwrap();
}

#[test]
fn keep_alive_and_pipelining() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    // Three requests in one write: answered in order on the same connection.
    c.send(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /publish?room=pipe HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
          Content-Length: 5\r\n\r\nfirst\
          GET /subscribe?room=pipe&since=0 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let health = c.response();
    assert_eq!((health.status, health.text()), (200, "ok\n"));
    let published = c.response();
    assert_eq!(published.status, 200);
    let got = c.response();
    assert_eq!((got.status, got.text()), (200, "first"));
    assert_eq!(
        got.header("Parlor-Cursor"),
        published.header("Parlor-Cursor")
    );

    // The connection stays usable, and a request split across writes is fine too.
    c.send(b"GET /heal");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"thz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);

    // Connection: close is honoured: the answer, then EOF.
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(c.is_closed_by_server());
    drop(c);
    server.shutdown().unwrap();
}

#[test]
fn held_poll_times_out_with_204() {
    let server = start(&["--poll-timeout", "300ms"]);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    sub.get("/subscribe?room=quiet");
    let got = sub.response();
    assert_eq!(got.status, 204);
    assert!(got.header("Parlor-Cursor").is_some());
    // Still keep-alive: the next poll works.
    sub.get("/healthz");
    assert_eq!(sub.response().status, 200);
    drop(sub);
    server.shutdown().unwrap();
}

#[test]
fn two_thousand_held_polls_then_one_publish_reaches_all() {
    const N: usize = 2000;
    let _ = parlor_os::raise_nofile_limit(); // 2 descriptors per connection in this process
    let server = start(&[]);
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..N)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.get("/subscribe?room=crowd");
            c
        })
        .collect();
    wait_held(addr, N as u64);

    let mut publisher = Client::connect(addr);
    publisher.publish("crowd", "to everyone");
    let cursor = publisher
        .response()
        .header("Parlor-Cursor")
        .unwrap()
        .to_string();
    for sub in &mut subs {
        let got = sub.response();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "to everyone");
        assert_eq!(got.header("Parlor-Cursor"), Some(cursor.as_str()));
    }
    assert_eq!(metric(addr, "parlor_held_polls"), 0);
    drop((subs, publisher));
    server.shutdown().unwrap();
}

/// A client that asks for big answers and never reads them is cut off once its unsent bytes
/// pass the cap; its slot is freed while it still holds its socket open, and everyone else keeps
/// being served.
#[test]
fn client_that_never_reads_is_cut_off() {
    let server = start(&["--max-unsent-bytes", "65536"]);
    let addr = server.local_addr();

    // Fill a room's history with big messages: every `since=0` JSON batch is then ~160 KB.
    let big = "x".repeat(16_000);
    let mut publisher = Client::connect(addr);
    for _ in 0..10 {
        publisher.publish("big", &big);
        assert_eq!(publisher.response().status, 200);
    }

    let mut hog = Client::connect(addr);
    let one = b"GET /subscribe?room=big&since=0&format=json HTTP/1.1\r\nHost: t\r\n\r\n";
    let burst: Vec<u8> = one.repeat(400); // ~64 MB of answers: far past every socket buffer
                                          // The server may cut us off mid-write; that is the point, so a write error is fine.
    let _ = hog.stream.write_all(&burst);

    // Our connection is gone from the server while we never read and never closed: only the
    // publisher's (and the metrics request's own) connection remain.
    wait_until("the slow reader to be cut off", || {
        metric(addr, "parlor_connections") <= 2
    });

    // Others are served meanwhile and after.
    publisher.publish("big", "still here");
    assert_eq!(publisher.response().status, 200);
    let r = request(addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);

    // And what the hog finally reads ends early: it got far less than it asked for.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match std::io::Read::read(&mut hog.stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received < 400 * 160_000 / 2, "received {received} bytes");
    drop((hog, publisher));
    server.shutdown().unwrap();
}

#[test]
fn graceful_stop_answers_held_polls() {
    let server = start(&[]);
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.get("/subscribe?room=bye");
            c
        })
        .collect();
    wait_held(addr, 3);
    let stop = server.stop_handle();
    stop.stop();
    for sub in &mut subs {
        let got = sub.response();
        assert!(matches!(got.status, 204 | 503), "status {}", got.status);
        assert_eq!(got.header("Connection"), Some("close"));
        assert!(sub.is_closed_by_server());
    }
    drop(subs);
    server.shutdown().unwrap();
    // The listener is gone.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Requests pipelined behind a held poll past `--max-pipeline-bytes` pause reading; once the
/// poll is answered, reading resumes (edge-triggered: the adapter must retry by itself) and every
/// buffered request is answered, in order.
#[test]
fn reading_pauses_behind_a_held_poll_and_resumes() {
    const N: usize = 3000;
    let server = start(&["--max-pipeline-bytes", "1024"]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.get("/subscribe?room=paused");
    wait_held(addr, 1);
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(
            format!("GET /healthz?n={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
    }
    // ~130 KB, far past the 1 KiB cap; written from a thread in case the kernel's buffers fill.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&burst));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metric(addr, "parlor_held_polls"),
        1,
        "still held while paused"
    );

    let mut publisher = Client::connect(addr);
    publisher.publish("paused", "go");
    assert_eq!(publisher.response().status, 200);
    let first = c.response();
    assert_eq!((first.status, first.text()), (200, "go"));
    for _ in 0..N {
        let r = c.response();
        assert_eq!((r.status, r.text()), (200, "ok\n"));
    }
    sender.join().unwrap().unwrap();
    drop((c, publisher));
    server.shutdown().unwrap();
}
