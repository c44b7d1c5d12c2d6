//! Microbenchmarks of `parlor-core` alone, no sockets: a tiny self-written harness
//! (`harness = false`) that reports the median ns/op over repeated timed batches.
//!
//! Run: `cargo bench -p parlor-bench --bench core` (add `-- quick` for fewer batches, or a
//! substring to run only matching benchmarks).

use std::hint::black_box;
use std::time::{Duration, Instant};

use parlor_core::http::{Limits, ReadEvent, RequestReader};

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
            "{name:<52} {:>12} ns/op  (min {}, max {}, {} x {iters})",
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
Content-Length: 42\r\n\r\n\
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

fn main() {
    let h = Harness::from_args();
    http_benches(&h);
}
