//! A small blocking HTTP/1.1 client over real loopback TCP, and helpers to start the server.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use parlor_mio::Runner;
use parlor_os::{parse_args, CliOutcome};

/// The longest any single wait may take before a test fails (never a timing assertion: only a
/// bound so a broken server fails the test instead of hanging it).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Starts the server in this process on a free loopback port with these extra flags.
pub fn start(flags: &[&str]) -> Runner {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend(flags.iter().map(|s| s.to_string()));
    let Ok(CliOutcome::Run(cli)) = parse_args("parlor-mio", args, 10_000) else {
        panic!("bad test flags {flags:?}");
    };
    Runner::start(cli).expect("start the server")
}

/// One parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// A keep-alive connection that reads responses in order.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn get(&mut self, target: &str) {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }

    pub fn publish(&mut self, room: &str, text: &str) {
        self.send(
            format!(
                "POST /publish?room={room} HTTP/1.1\r\nHost: t\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .as_bytes(),
        );
    }

    /// Reads one response (head, then a `Content-Length` body, or to EOF without one).
    pub fn response(&mut self) -> Response {
        self.try_response().expect("read a response")
    }

    pub fn try_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a response",
                ));
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("ascii head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header colon");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        self.buf.drain(..head_end);
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().expect("content-length"));
        let body = match length {
            Some(n) => {
                while self.buf.len() < n {
                    if self.fill()? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                    }
                }
                self.buf.drain(..n).collect()
            }
            None if status == 204 || status == 304 || (100..200).contains(&status) => Vec::new(),
            None => {
                while self.fill()? > 0 {}
                std::mem::take(&mut self.buf)
            }
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closed the connection (EOF or reset) with nothing more to read.
    pub fn is_closed_by_server(&mut self) -> bool {
        matches!(self.fill(), Ok(0) | Err(_))
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(raw.as_bytes());
    c.response()
}

/// A gauge or counter from `/metrics` (without labels).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let r = request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Waits (bounded by [`PATIENCE`]) until `f` holds.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `n` polls are held by the server.
pub fn wait_held(addr: SocketAddr, n: u64) {
    wait_until(&format!("{n} held polls"), || {
        metric(addr, "parlor_held_polls") >= n
    });
}
