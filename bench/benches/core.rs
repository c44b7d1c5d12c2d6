//! Microbenchmarks of `parlor-core` alone, no sockets: a tiny self-written harness
//! (`harness = false`) that reports the median ns/op over repeated timed batches.
//!
//! Run: `cargo bench -p parlor-bench --bench core` (add `-- quick` for fewer batches, or a
//! substring to run only matching benchmarks).

use std::hint::black_box;
use std::time::{Duration, Instant};

use parlor_core::__private::{ReadEvent, RequestReader};
use parlor_core::{Config, ConnId, Limits, Output, Server};

struct Harness {
    filter: Vec<String>,
    batches: usize,
    batch_time: Duration,
}

impl Harness {
    fn from_args() -> Harness {
        let mut h = Harness {
            filter: Vec::new(),
            batches: 21,
            batch_time: Duration::from_millis(20),
        };
        for a in std::env::args().skip(1) {
            match a.as_str() {
                "--bench" => {}
                "quick" => {
                    h.batches = 7;
                    h.batch_time = Duration::from_millis(5);
                }
                f if !f.starts_with('-') => h.filter.push(f.to_string()),
                _ => {}
            }
        }
        h
    }

    fn enabled(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }

    /// Times `op` (one operation per call): calibrates a batch size, then reports the median,
    /// min and max ns/op over the batches.
    fn run(&self, name: &str, mut op: impl FnMut()) {
        if !self.enabled(name) {
            return;
        }
        let mut iters = 1u64;
        loop {
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            let e = t.elapsed();
            if e >= self.batch_time / 2 || iters >= 1 << 30 {
                let per = e.as_nanos().max(1) as f64 / iters as f64;
                iters = ((self.batch_time.as_nanos() as f64 / per) as u64).max(1);
                break;
            }
            iters *= 2;
        }
        let mut per_op: Vec<f64> = (0..self.batches)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    op();
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect();
        per_op.sort_by(|a, b| a.total_cmp(b));
        let med = per_op[per_op.len() / 2];
        println!(
            "{name:<62} {:>10} ns/op  (min {}, max {}, {} x {iters})",
            fmt_ns(med),
            fmt_ns(per_op[0]),
            fmt_ns(per_op[per_op.len() - 1]),
            self.batches
        );
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

const TYPICAL_GET: &[u8] = b"GET /subscribe?room=main&since=mi8x3k2a-7&format=json HTTP/1.1\r\n\
Host: 127.0.0.1:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: http://127.0.0.1:8080/\r\n\
Connection: keep-alive\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: cors\r\n\
Sec-Fetch-Site: same-origin\r\n\r\n";

const TYPICAL_POST: &[u8] = b"POST /publish?room=main HTTP/1.1\r\n\
Host: 127.0.0.1:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
Origin: http://127.0.0.1:8080\r\n\
Content-Length: 43\r\n\r\n\
{\"message\":\"hello, how is everyone doing?\"}";

fn parse_one(reader: &mut RequestReader, bytes: &[u8]) {
    reader.push(bytes);
    match reader.next_event() {
        Some(Ok(ReadEvent::Request(r))) => {
            black_box(r);
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn http_benches(h: &Harness) {
    let mut reader = RequestReader::new(Limits::default());
    h.run("http: parse typical GET /subscribe (11 headers)", || {
        parse_one(&mut reader, black_box(TYPICAL_GET))
    });
    let mut reader = RequestReader::new(Limits::default());
    h.run("http: parse typical POST /publish (JSON body)", || {
        parse_one(&mut reader, black_box(TYPICAL_POST))
    });
    // The same request arriving in 16-byte pieces: the head-end search must stay linear.
    h.run(
        "http: parse GET /subscribe pushed in 16-byte pieces",
        || {
            let mut reader = RequestReader::new(Limits::default());
            let mut got = None;
            for piece in TYPICAL_GET.chunks(16) {
                reader.push(piece);
                if let Some(ev) = reader.next_event() {
                    got = Some(ev);
                }
            }
            let _ = black_box(got.expect("a request"));
        },
    );
}

const PEER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const SUBSCRIBE: &[u8] = b"GET /subscribe?room=bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const SUBSCRIBE_OTHER: &[u8] = b"GET /subscribe?room=other HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const PUBLISH_LONELY: &[u8] = b"POST /publish?room=lonely HTTP/1.1\r\nHost: 127.0.0.1\r\n\
Content-Type: text/plain\r\nContent-Length: 32\r\n\r\nhello, a message of 32 bytes....";
const PUBLISH_BENCH: &[u8] = b"POST /publish?room=bench HTTP/1.1\r\nHost: 127.0.0.1\r\n\
Content-Type: text/plain\r\nContent-Length: 32\r\n\r\nhello, a message of 32 bytes....";

fn server(now: Instant) -> Server {
    let config = Config {
        max_connections: 1_000_000,
        ..Config::default()
    };
    Server::new(config, 1_763_764_000_000, now)
}

/// Carries out the outputs as an adapter whose writes all succeed would; returns the Sends.
fn drain(server: &mut Server, now: Instant) -> usize {
    let mut sends = 0;
    while let Some(out) = server.poll_output() {
        match out {
            Output::Send { conn, data } => {
                sends += 1;
                server
                    .handle_flushed(conn, data.len(), now)
                    .expect("open connection");
            }
            Output::PauseRead { .. } | Output::ResumeRead { .. } => {}
            other => panic!("unexpected output {other:?}"),
        }
    }
    sends
}

/// Collects the outputs without acting on them (the timed part of a fan-out).
fn collect(server: &mut Server, into: &mut Vec<Output>) {
    while let Some(out) = server.poll_output() {
        into.push(out);
    }
}

/// One publish to `n` polls held in its room, inside the core: the publish request, the
/// `n` responses queued, and the outputs drained into a list. The re-subscribing in between
/// is not timed.
fn fanout_bench(h: &Harness, n: usize) {
    let name = format!("server: one publish to {n} held polls (per publish)");
    if !h.enabled(&name) {
        return;
    }
    let now = Instant::now();
    let mut s = server(now);
    let subs: Vec<ConnId> = (0..n).map(|_| s.handle_accept(PEER, now)).collect();
    let publisher = s.handle_accept(PEER, now);
    let mut outs = Vec::with_capacity(n + 8);
    let mut times = Vec::new();
    for _ in 0..h.batches {
        for &c in &subs {
            s.handle_data(c, SUBSCRIBE, now).expect("open");
        }
        drain(&mut s, now);
        assert_eq!(s.held_count(), n, "every subscriber holds a poll");
        let t = Instant::now();
        s.handle_data(publisher, black_box(PUBLISH_BENCH), now)
            .expect("open");
        collect(&mut s, &mut outs);
        let e = t.elapsed();
        times.push(e.as_nanos() as f64);
        assert_eq!(
            outs.len(),
            n + 1,
            "one response per poll and one to the publisher"
        );
        for out in outs.drain(..) {
            if let Output::Send { conn, data } = out {
                s.handle_flushed(conn, data.len(), now).expect("open");
            }
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let med = times[times.len() / 2];
    println!(
        "{name:<62} {:>10} ns/op  (min {}, max {}, {} runs; {:.0} ns per delivery)",
        fmt_ns(med),
        fmt_ns(times[0]),
        fmt_ns(times[times.len() - 1]),
        times.len(),
        med / n as f64,
    );
}

/// A server with `open` connections (half of them holding a poll in another room, half idle)
/// plus the client whose requests are timed.
fn server_with(open: usize, now: Instant) -> (Server, ConnId) {
    let mut s = server(now);
    for i in 0..open.saturating_sub(1) {
        let c = s.handle_accept(PEER, now);
        if i % 2 == 0 {
            s.handle_data(c, SUBSCRIBE_OTHER, now).expect("open");
        }
    }
    drain(&mut s, now);
    let client = s.handle_accept(PEER, now);
    (s, client)
}

fn scaling_benches(h: &Harness) {
    for open in [1usize, 1_000, 100_000] {
        let now = Instant::now();
        let (mut s, client) = server_with(open, now);
        assert_eq!(s.connection_count(), open);
        h.run(
            &format!("server: GET /healthz request+response, {open} open"),
            || {
                s.handle_data(client, black_box(HEALTHZ), now)
                    .expect("open");
                black_box(drain(&mut s, now));
            },
        );
        h.run(
            &format!("server: POST /publish to a room with no poll, {open} open"),
            || {
                s.handle_data(client, black_box(PUBLISH_LONELY), now)
                    .expect("open");
                black_box(drain(&mut s, now));
            },
        );
        h.run(
            &format!("server: accept + close a connection, {open} open"),
            || {
                let c = s.handle_accept(PEER, now);
                s.handle_closed(c, now).expect("open");
                black_box(drain(&mut s, now));
            },
        );
        h.run(
            &format!("server: subscribe + publish + answer (1 poll), {open} open"),
            || {
                s.handle_data(client, black_box(SUBSCRIBE), now)
                    .expect("open");
                let p = s.handle_accept(PEER, now);
                s.handle_data(p, black_box(PUBLISH_BENCH), now)
                    .expect("open");
                black_box(drain(&mut s, now));
                s.handle_closed(p, now).expect("open");
                black_box(drain(&mut s, now));
            },
        );
    }
}

fn main() {
    let h = Harness::from_args();
    http_benches(&h);
    scaling_benches(&h);
    fanout_bench(&h, 10_000);
}
