//! Many held polls, and DESIGN §5: graceful shutdown on SIGTERM/SIGINT.

use std::time::{Duration, Instant};

use parlor_tests::client::ReadError;
use parlor_tests::{both, Client, Kind, Server};

both!(
    five_thousand_held_polls,
    sigterm_answers_held_polls,
    sigint_exits,
    healthz_during_shutdown,
    connection_cap,
    connection_cap_per_address,
    out_of_file_descriptors,
);

const HELD: usize = 5000;

fn five_thousand_held_polls(kind: Kind) {
    let s = Server::start(kind);
    // Subscribing with the cursor of the last message makes the outcome independent of when the
    // server reads each request: a subscriber read after the publish is answered at once.
    let c0 = s.publish("fan", "before");
    let target = format!("/subscribe?room=fan&since={c0}");
    let t = Instant::now();
    let mut clients: Vec<Client> = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut c = s.client();
        c.send_request("GET", &target, &[], b"");
        clients.push(c);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "opening {HELD} connections took over 60 s"
        );
    }
    // Let the server take them all in; check they are held (a sample stays quiet).
    s.wait_held(HELD);
    for c in clients.iter_mut().step_by(500) {
        c.expect_nothing(Duration::from_millis(10));
    }
    let t = Instant::now();
    let cursor = s.publish("fan", "to five thousand");
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_timeout(Duration::from_secs(30));
        let r = c.read_response();
        assert_eq!(r.status, 200, "subscriber {i}:\n{r}");
        assert_eq!(r.text(), "to five thousand", "subscriber {i}");
        assert_eq!(r.cursor(), cursor, "subscriber {i}");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "fan-out to {HELD} took {took:?}"
    );
    // Everyone can poll again on the same connection.
    for c in clients.iter_mut().take(10) {
        c.send_request("GET", &format!("/subscribe?room=fan&since={c0}"), &[], b"");
        assert_eq!(c.read_response().text(), "to five thousand");
    }
    drop(clients);
    s.get("/healthz").assert_status(200);
}

fn sigterm_answers_held_polls(kind: Kind) {
    let mut s = Server::start(kind);
    let mut polls: Vec<Client> = (0..3)
        .map(|i| {
            let mut c = s.client();
            let target = if i == 0 {
                "/subscribe?room=s".to_owned()
            } else {
                "/subscribe?room=s&format=json".to_owned()
            };
            c.send_request("GET", &target, &[], b"");
            c
        })
        .collect();
    let mut idle = s.client();
    idle.get("/healthz").assert_status(200);
    s.wait_held(3);
    for c in polls.iter_mut() {
        c.expect_nothing(Duration::from_millis(10));
    }

    let t = Instant::now();
    s.signal("TERM");
    for c in polls.iter_mut() {
        let r = c.read_response();
        match r.status {
            204 => {}
            503 => {
                r.must_header("Retry-After");
            }
            _ => panic!("a held poll at shutdown gets 204 or 503 with Retry-After, got\n{r}"),
        }
        r.assert_dynamic();
    }
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // The idle connection was closed (possibly after a 503).
    match idle.try_read_response(false) {
        Ok(r) => assert_eq!(r.status, 503, "idle connection at shutdown:\n{r}"),
        Err(parlor_tests::client::ReadError::Closed(b)) if b.is_empty() => {}
        Err(parlor_tests::client::ReadError::Io(..)) => {}
        Err(e) => panic!("idle connection at shutdown: {e}"),
    }
    assert!(
        std::net::TcpStream::connect_timeout(&s.addr(), Duration::from_secs(2)).is_err(),
        "the listener is closed after exit"
    );
}

fn sigint_exits(kind: Kind) {
    let mut s = Server::start(kind);
    s.get("/healthz").assert_status(200);
    s.signal("INT");
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");
}

fn healthz_during_shutdown(kind: Kind) {
    // A held poll keeps the server from finishing at once, so the shutdown is observable: the
    // poll is answered `503` with `Retry-After`, and the idle keep-alive connection is closed,
    // so a request sent on it afterwards gets `503` or finds the connection closed; never a
    // `200`, and never silence.
    let mut s = Server::with_args(kind, &["--shutdown-grace", "2s"]);
    let mut held = s.client();
    held.send_request("GET", "/subscribe?room=h", &[], b"");
    let mut other = s.client();
    other.get("/healthz").assert_status(200);
    s.wait_held(1);
    s.signal("TERM");
    let r = held.read_response();
    r.assert_error(503).assert_closes();
    assert_eq!(
        r.header("Retry-After"),
        Some("2"),
        "held poll at shutdown:\n{r}"
    );
    assert_eq!(r.text(), "server is shutting down\n");
    held.expect_closed(Duration::from_secs(5));
    // The poll was answered, so the shutdown has begun for every connection.
    let _ = other.try_send(&parlor_tests::request(
        "GET",
        "/healthz",
        &s.host(),
        &[],
        b"",
    ));
    match other.try_read_response(false) {
        Ok(r) => {
            r.assert_error(503);
        }
        Err(ReadError::Closed(bytes)) if bytes.is_empty() => {}
        Err(ReadError::Io(e, bytes))
            if bytes.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("healthz while shutting down: expected 503 or a close, got {e}"),
    }
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

/// A connection past a cap gets `503` and is closed; the cap frees up when a connection closes.
fn refused_past_cap(s: &Server, open: &mut Vec<Client>, cap: usize) {
    for _ in 0..cap {
        let mut c = s.client();
        c.get("/healthz").assert_status(200);
        open.push(c);
    }
    let mut extra = s.client();
    let r = extra.read_response();
    r.assert_error(503).assert_closes();
    extra.expect_closed(Duration::from_secs(5));
    // The server may linger until the client closes too (bounded by its timeouts): close it.
    drop(extra);
    // The ones inside the cap are still served.
    for c in open.iter_mut() {
        c.get("/healthz").assert_status(200);
    }
    // Closing one makes room.
    drop(open.pop());
    parlor_tests::eventually(Duration::from_secs(5), "a slot frees after a close", || {
        let mut c = s.client();
        c.send_request("GET", "/healthz", &[], b"");
        let r = c.read_response();
        (r.status == 200).then_some(())
    });
}

fn connection_cap(kind: Kind) {
    let s = Server::with_args(kind, &["--max-connections", "3"]);
    let mut open = Vec::new();
    refused_past_cap(&s, &mut open, 3);
}

fn connection_cap_per_address(kind: Kind) {
    // DESIGN §5: when set, the per-address cap applies to loopback too.
    let s = Server::with_args(kind, &["--max-connections-per-ip", "2"]);
    let mut open = Vec::new();
    refused_past_cap(&s, &mut open, 2);
}

/// CPU time (user + system) the process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn out_of_file_descriptors(kind: Kind) {
    // A connection cap above what the open-file limit allows: accept fails with EMFILE. The
    // server must neither die nor spin, and must serve again once descriptors free up.
    let s = Server::with_nofile(kind, 64, &["--max-connections", "1000"]);
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..100 {
        let mut c = s.client();
        c.send_request("GET", "/healthz", &[], b"");
        clients.push(c);
    }
    // Some were answered, the rest wait in the listen backlog (or were refused).
    let mut answered = 0;
    let mut waiting = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    for mut c in clients {
        c.set_timeout(Duration::from_millis(20));
        match c.try_read_response(false) {
            Ok(r) if r.status == 200 => {
                answered += 1;
                waiting.push(c);
            }
            Ok(r) => assert_eq!(r.status, 503, "past the limit: 503 or wait, got\n{r}"),
            Err(parlor_tests::client::ReadError::Timeout(b)) if b.is_empty() => waiting.push(c),
            Err(_) => {} // closed: fine
        }
    }
    assert!(answered > 0, "nothing was answered");
    assert!(
        answered < 100,
        "all 100 connections were served: the open-file limit of 64 did not take effect"
    );
    // Not spinning: while out of descriptors the loop uses little CPU.
    let before = cpu_time(s.pid());
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(s.pid()) - before;
    assert!(
        used < t.elapsed() / 2,
        "server used {used:?} of CPU in {:?} while out of file descriptors: spinning",
        t.elapsed()
    );
    // Logged, exactly, and once for the whole episode (no accept has succeeded since: nothing
    // was freed). The log is read from the server's stderr pipe by a thread, hence the wait.
    let expected = parlor_os::testkit::binary::emfile_line(kind.name());
    let accept_lines = || -> Vec<String> {
        s.stderr()
            .lines()
            .filter(|l| l.contains("accept failed"))
            .map(str::to_owned)
            .collect()
    };
    parlor_tests::eventually(Duration::from_secs(10), "the accept error logged", || {
        (!accept_lines().is_empty()).then_some(())
    });
    assert_eq!(accept_lines(), [expected]);
    // Free everything: the server serves new connections again.
    drop(waiting);
    parlor_tests::eventually(Duration::from_secs(10), "served again after EMFILE", || {
        let mut c = s.client();
        c.set_timeout(Duration::from_secs(2));
        c.send_request("GET", "/healthz", &[], b"");
        match c.try_read_response(false) {
            Ok(r) if r.status == 200 => Some(()),
            _ => None,
        }
    });
}
