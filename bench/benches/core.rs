//! Microbenchmarks of `parlor-core` alone, no sockets, on divan.
//!
//! Run: `cargo bench -p parlor-bench --bench core` (add `-- NAME` to run only benchmarks whose
//! path contains NAME, `-- --sample-count 10` for a quicker pass; `-- --help` lists divan's
//! options).

use std::hint::black_box;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::Bencher;
use parlor_core::__private::{HttpError, ReadEvent, RequestReader};
use parlor_core::{Config, ConnId, Limits, Output, Server};

fn main() {
    divan::main();
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
    match reader.next_event(&Limits::default()) {
        Some(Ok(ReadEvent::Request(r))) => {
            black_box(r);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The request reader alone.
mod http {
    use super::*;

    /// A typical browser `GET /subscribe` (11 headers).
    #[divan::bench]
    fn parse_typical_get(bencher: Bencher) {
        let mut reader = RequestReader::new();
        bencher.bench_local(|| parse_one(&mut reader, black_box(TYPICAL_GET)));
    }

    /// A typical browser `POST /publish` with a JSON body.
    #[divan::bench]
    fn parse_typical_post(bencher: Bencher) {
        let mut reader = RequestReader::new();
        bencher.bench_local(|| parse_one(&mut reader, black_box(TYPICAL_POST)));
    }

    /// The same GET arriving in 16-byte pieces: the head-end search must stay linear.
    #[divan::bench]
    fn parse_get_in_16_byte_pieces() -> Option<Result<ReadEvent, HttpError>> {
        let mut reader = RequestReader::new();
        let mut got = None;
        for piece in black_box(TYPICAL_GET).chunks(16) {
            reader.push(piece);
            if let Some(ev) = reader.next_event(&Limits::default()) {
                got = Some(ev);
            }
        }
        assert!(got.is_some(), "a request");
        got
    }
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

/// The whole server, inputs to outputs, with `open` connections besides the client (half of
/// them holding a poll in another room).
mod server {
    use super::*;

    const OPEN: &[usize] = &[1, 1_000, 100_000];

    /// `GET /healthz`, request and response.
    #[divan::bench(args = OPEN)]
    fn healthz(bencher: Bencher, open: usize) {
        let now = Instant::now();
        let (mut s, client) = server_with(open, now);
        bencher.bench_local(|| {
            s.handle_data(client, black_box(HEALTHZ), now)
                .expect("open");
            drain(&mut s, now)
        });
    }

    /// `POST /publish` to a room no poll waits in.
    #[divan::bench(args = OPEN)]
    fn publish_to_a_room_with_no_poll(bencher: Bencher, open: usize) {
        let now = Instant::now();
        let (mut s, client) = server_with(open, now);
        bencher.bench_local(|| {
            s.handle_data(client, black_box(PUBLISH_LONELY), now)
                .expect("open");
            drain(&mut s, now)
        });
    }

    /// A connection accepted and closed.
    #[divan::bench(args = OPEN)]
    fn accept_and_close(bencher: Bencher, open: usize) {
        let now = Instant::now();
        let (mut s, _) = server_with(open, now);
        bencher.bench_local(|| {
            let c = s.handle_accept(PEER, now);
            s.handle_closed(c, now).expect("open");
            drain(&mut s, now)
        });
    }

    /// A poll held, a publish from another connection, the poll answered.
    #[divan::bench(args = OPEN)]
    fn subscribe_publish_answer(bencher: Bencher, open: usize) {
        let now = Instant::now();
        let (mut s, client) = server_with(open, now);
        bencher.bench_local(|| {
            s.handle_data(client, black_box(SUBSCRIBE), now)
                .expect("open");
            let p = s.handle_accept(PEER, now);
            s.handle_data(p, black_box(PUBLISH_BENCH), now)
                .expect("open");
            black_box(drain(&mut s, now));
            s.handle_closed(p, now).expect("open");
            drain(&mut s, now)
        });
    }

    /// One publish to 10,000 polls held in its room: the publish request, the responses queued
    /// and the outputs collected into a list. Building the server and the held polls is not
    /// timed; the counter gives the time per delivery.
    #[divan::bench(sample_count = 21, sample_size = 1)]
    fn publish_to_10000_held_polls(bencher: Bencher) {
        const N: usize = 10_000;
        bencher
            .counter(ItemsCount::new(N))
            .with_inputs(|| {
                let now = Instant::now();
                let mut s = server(now);
                let subs: Vec<ConnId> = (0..N).map(|_| s.handle_accept(PEER, now)).collect();
                let publisher = s.handle_accept(PEER, now);
                for &c in &subs {
                    s.handle_data(c, SUBSCRIBE, now).expect("open");
                }
                drain(&mut s, now);
                assert_eq!(s.held_count(), N, "every subscriber holds a poll");
                (s, publisher, now, Vec::with_capacity(N + 8))
            })
            .bench_local_refs(|(s, publisher, now, outs)| {
                s.handle_data(*publisher, black_box(PUBLISH_BENCH), *now)
                    .expect("open");
                collect(s, outs);
                assert_eq!(
                    outs.len(),
                    N + 1,
                    "one response per poll and one to the publisher"
                );
            });
    }
}
