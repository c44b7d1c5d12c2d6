//! Scenarios for a server running in this process ([`start`]), over real loopback TCP. Each is
//! generic over the adapter; [`loopback_tests!`](crate::loopback_tests) makes them tests.

use std::time::Duration;

use super::{
    eventually, metric, padded_healthz, publish, start, wait_held, write_until_blocked, Client,
    PATIENCE,
};
use crate::{Serve, Stop};

/// Makes every scenario of this module a `#[test]` against the adapter `$serve` (a [`Serve`]).
#[macro_export]
macro_rules! loopback_tests {
    ($serve:ty) => {
        $crate::loopback_tests!(@each $serve;
            subscribe_publish_round_trip,
            held_poll_is_answered_by_a_publish,
            held_poll_times_out_with_204,
            pipelined_requests_are_answered_in_order,
            reading_pauses_behind_a_held_poll_with_back_pressure,
            client_that_never_reads_is_cut_off_while_others_are_served,
            graceful_stop_answers_held_polls_and_closes_the_listener,
            one_publish_reaches_a_thousand_held_polls,
        );
    };
    (@each $serve:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::loopback::$name::<$serve>();
            }
        )*
    };
}

/// A publish, then the message by cursor, as text and as a JSON batch.
pub fn subscribe_publish_round_trip<S: Serve>() {
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    let published = publish(&mut c, "trip", "hello, parlor");
    assert_eq!(published.status, 200);
    let cursor = published.cursor();
    assert_eq!(published.text(), format!("{cursor}\n"));

    // Already there: answered at once, on the same keep-alive connection.
    let got = c.get("/subscribe?room=trip&since=0");
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "hello, parlor");
    assert_eq!(got.header("Parlor-Cursor"), Some(cursor.as_str()));
    assert_eq!(got.header("Cache-Control"), Some("no-store"));

    let got = c.get("/subscribe?room=trip&since=0&format=json");
    assert_eq!(got.status, 200);
    let json = got.json();
    assert_eq!(json["messages"][0]["text"], "hello, parlor");
    assert_eq!(json["next"], cursor.as_str());
    server.shutdown().unwrap();
}

/// The decades-old XMLHttpRequest loop: subscribe without a cursor, get one message, subscribe
/// again, on one keep-alive connection.
pub fn held_poll_is_answered_by_a_publish<S: Serve>() {
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    let mut publisher = Client::connect(addr);
    for i in 0..3 {
        sub.send_request("GET", "/subscribe?room=held", &[], b"");
        wait_held(addr, 1);
        let text = format!("message {i}");
        let published = publish(&mut publisher, "held", &text);
        assert_eq!(published.status, 200);
        let got = sub.read_response();
        assert_eq!((got.status, got.text()), (200, text.as_str()));
        assert_eq!(
            got.header("Parlor-Cursor"),
            Some(published.cursor().as_str())
        );
        assert_eq!(metric(addr, "parlor_held_polls"), 0);
    }
    server.shutdown().unwrap();
}

pub fn held_poll_times_out_with_204<S: Serve>() {
    let server = start::<S>(&["--poll-timeout", "300ms"]);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr);
    let got = sub.get("/subscribe?room=quiet");
    assert_eq!(got.status, 204);
    assert!(got.header("Parlor-Cursor").is_some());
    // Still keep-alive: the next request works, and so does the next timeout.
    assert_eq!(sub.get("/healthz").status, 200);
    assert_eq!(sub.get("/subscribe?room=quiet").status, 204);
    server.shutdown().unwrap();
}

pub fn pipelined_requests_are_answered_in_order<S: Serve>() {
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    // Three requests in one write.
    c.send(
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n\
          POST /publish?room=pipe HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
          Content-Length: 5\r\n\r\nfirst\
          GET /subscribe?room=pipe&since=0 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    let health = c.read_response();
    assert_eq!((health.status, health.text()), (200, "ok\n"));
    let published = c.read_response();
    assert_eq!(published.status, 200);
    let got = c.read_response();
    assert_eq!((got.status, got.text()), (200, "first"));
    assert_eq!(
        got.header("Parlor-Cursor"),
        published.header("Parlor-Cursor")
    );

    // A request split across writes.
    c.send(b"GET /heal");
    std::thread::sleep(Duration::from_millis(20));
    c.send(b"thz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(c.read_response().status, 200);

    // Connection: close: the answer, then EOF.
    let r = c.exchange("GET", "/healthz", &[("Connection", "close")], b"");
    assert_eq!(r.status, 200);
    c.expect_closed(PATIENCE);
    server.shutdown().unwrap();
}

/// Behind a held poll, a client pipelines 32 MiB of requests. The server reads up to
/// `--max-pipeline-bytes` and stops: the client's writes block after what the kernel's socket
/// buffers hold (a few MiB), far short of the 32 MiB, and the poll stays held. The publish that
/// answers the poll resumes reading, and every request is answered, in order (for an
/// edge-triggered loop, resuming means reading again by itself).
pub fn reading_pauses_behind_a_held_poll_with_back_pressure<S: Serve>() {
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    c.send_request("GET", "/subscribe?room=paused", &[], b"");
    wait_held(addr, 1);
    let n = 32 * 1024 * 1024 / 15_050;
    let burst = padded_healthz(n);
    let written = write_until_blocked(c.stream(), &burst);
    assert!(
        written < burst.len() / 2,
        "the server kept reading behind a held poll: the writer got {written} of {} bytes in",
        burst.len()
    );
    assert_eq!(
        metric(addr, "parlor_held_polls"),
        1,
        "still held while paused"
    );

    let mut publisher = Client::connect(addr);
    assert_eq!(publish(&mut publisher, "paused", "go").status, 200);
    let first = c.read_response();
    assert_eq!((first.status, first.text()), (200, "go"));
    // The rest from another thread, while this one reads the answers.
    let mut writer = c.stream().try_clone().unwrap();
    writer.set_write_timeout(Some(PATIENCE)).unwrap();
    let rest = burst[written..].to_vec();
    let sender = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &rest));
    for i in 0..n {
        let r = c.read_response();
        assert_eq!((r.status, r.text()), (200, "ok\n"), "answer {i} of {n}");
    }
    sender.join().unwrap().unwrap();
    server.shutdown().unwrap();
}

/// A client that asks for big answers and never reads them is cut off once its unsent bytes pass
/// the cap, while it still holds its socket open; everyone else keeps being served.
pub fn client_that_never_reads_is_cut_off_while_others_are_served<S: Serve>() {
    let server = start::<S>(&[
        "--max-unsent-bytes",
        "65536",
        "--max-message-bytes",
        "10000",
    ]);
    let addr = server.local_addr();

    // Fill a room's history with big messages: every `since=0` JSON batch is then ~30 KB (as
    // much as fits half the unsent cap).
    let big = "x".repeat(10_000);
    let mut publisher = Client::connect(addr);
    for _ in 0..10 {
        assert_eq!(publish(&mut publisher, "big", &big).status, 200);
    }

    let mut hog = Client::connect(addr);
    let one = b"GET /subscribe?room=big&since=0&format=json HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // ~12 MB of answers: far past every socket buffer. The server may cut us off mid-write;
    // that is the point, so a write error is fine.
    let _ = hog.try_send(&one.repeat(400));

    // Our connection is gone from the server while we never read and never closed: only the
    // publisher's (and the metrics request's own) connection remain.
    eventually(PATIENCE, "the slow reader to be cut off", || {
        (metric(addr, "parlor_connections") <= 2).then_some(())
    });

    // Others are served meanwhile and after.
    assert_eq!(publish(&mut publisher, "big", "still here").status, 200);
    assert_eq!(Client::connect(addr).get("/healthz").status, 200);

    // What the hog finally reads ends early: far less than it asked for.
    let (received, ended) = hog.drain(PATIENCE);
    assert!(ended, "the hog's connection did not end");
    assert!(received < 400 * 30_000 / 2, "received {received} bytes");
    server.shutdown().unwrap();
}

pub fn graceful_stop_answers_held_polls_and_closes_the_listener<S: Serve>() {
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/subscribe?room=bye", &[], b"");
            c
        })
        .collect();
    wait_held(addr, 3);
    server.stop_handle().stop();
    for sub in &mut subs {
        let got = sub.read_response();
        assert!(matches!(got.status, 204 | 503), "status {}", got.status);
        assert_eq!(got.header("Connection"), Some("close"));
        sub.expect_closed(PATIENCE);
    }
    server.shutdown().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// Many held polls and one publish: everyone gets the same answer.
pub fn one_publish_reaches_a_thousand_held_polls<S: Serve>() {
    const N: usize = 1000;
    let _ = crate::raise_nofile_limit(); // 2 descriptors per connection in this process
    let server = start::<S>(&[]);
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..N)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send_request("GET", "/subscribe?room=crowd", &[], b"");
            c
        })
        .collect();
    wait_held(addr, N as u64);
    let mut publisher = Client::connect(addr);
    let cursor = publish(&mut publisher, "crowd", "to everyone").cursor();
    for sub in &mut subs {
        let got = sub.read_response();
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "to everyone");
        assert_eq!(got.header("Parlor-Cursor"), Some(cursor.as_str()));
    }
    assert_eq!(metric(addr, "parlor_held_polls"), 0);
    drop(subs);
    server.shutdown().unwrap();
}
