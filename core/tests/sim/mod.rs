//! A simulation harness for the core: a virtual clock and in-memory connections.
//!
//! `feed` bytes into a connection, `advance` the clock (jumping straight over time, so a 25 s
//! poll timeout takes microseconds), and read what each connection received. Outputs are carried
//! out like a well-behaved adapter would: sends are recorded and reported flushed (unless the
//! connection is marked as a slow reader), closes are reported back with `handle_closed`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use parlor_core::{Config, ConnId, Output, Server};

/// Wall-clock start of every simulated server (2023-11-14T22:13:20Z).
pub const EPOCH_MS: u64 = 1_700_000_000_000;

#[derive(Default)]
pub struct Peer {
    pub received: Vec<u8>,
    pub closed: bool,
    pub aborted: bool,
    pub paused: bool,
    /// Does not read: sends are never reported flushed.
    pub stalled: bool,
}

pub struct Sim {
    pub server: Server,
    pub now: Instant,
    pub peers: HashMap<ConnId, Peer>,
    /// Every output, in order, since the last `take_outputs`.
    pub log: Vec<Output>,
    live: HashSet<ConnId>,
}

impl Sim {
    pub fn new(config: Config) -> Sim {
        config.validate().expect("valid test config");
        // The harness picks the origin of its virtual clock; the core itself never reads it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Sim {
            server: Server::new(config, EPOCH_MS, now),
            now,
            peers: HashMap::new(),
            log: Vec::new(),
            live: HashSet::new(),
        }
    }

    pub fn default() -> Sim {
        Sim::new(Config::default())
    }

    pub fn epoch(&self) -> String {
        self.server.epoch().to_string()
    }

    pub fn cursor(&self, seq: u64) -> String {
        format!("{}-{seq}", self.server.epoch())
    }

    pub fn connect(&mut self) -> ConnId {
        self.connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    pub fn connect_from(&mut self, ip: IpAddr) -> ConnId {
        let id = self.server.handle_accept(ip, self.now);
        assert!(self.live.insert(id), "id {id:?} reused while live");
        self.peers.insert(id, Peer::default());
        self.drain();
        id
    }

    pub fn feed(&mut self, id: ConnId, bytes: impl AsRef<[u8]>) {
        self.server
            .handle_data(id, bytes.as_ref(), self.now)
            .expect("feed a live connection");
        self.drain();
    }

    pub fn eof(&mut self, id: ConnId) {
        self.server
            .handle_eof(id, self.now)
            .expect("eof on a live connection");
        self.drain();
    }

    /// The peer disappears (reset): the adapter reports it closed.
    pub fn vanish(&mut self, id: ConnId) {
        self.server
            .handle_closed(id, self.now)
            .expect("close a live connection");
        self.live.remove(&id);
        self.peers.get_mut(&id).unwrap().closed = true;
        self.drain();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.drain();
    }

    /// Jumps to the next deadline, if any, and fires it.
    pub fn next_deadline(&mut self) -> bool {
        match self.server.poll_timeout() {
            Some(t) => {
                self.now = self.now.max(t);
                self.server.handle_timeout(self.now);
                self.drain();
                true
            }
            None => false,
        }
    }

    pub fn stall(&mut self, id: ConnId) {
        self.peers.get_mut(&id).unwrap().stalled = true;
    }

    /// Carries out every output like an adapter would.
    pub fn drain(&mut self) {
        while let Some(out) = self.server.poll_output() {
            self.log.push(out.clone());
            match out {
                Output::Send { conn, data } => {
                    assert!(self.live.contains(&conn), "send to closed {conn:?}");
                    let peer = self.peers.get_mut(&conn).unwrap();
                    assert!(!peer.closed, "send after close on {conn:?}");
                    peer.received.extend_from_slice(&data);
                    if !peer.stalled {
                        self.server
                            .handle_flushed(conn, data.len(), self.now)
                            .expect("flushed on a live connection");
                    }
                }
                Output::Close { conn } | Output::Abort { conn } => {
                    assert!(self.live.remove(&conn), "close of closed {conn:?}");
                    let peer = self.peers.get_mut(&conn).unwrap();
                    peer.closed = true;
                    peer.aborted = matches!(out, Output::Abort { .. });
                    self.server
                        .handle_closed(conn, self.now)
                        .expect("closed a live connection");
                }
                Output::PauseRead { conn } => self.peers.get_mut(&conn).unwrap().paused = true,
                Output::ResumeRead { conn } => self.peers.get_mut(&conn).unwrap().paused = false,
            }
        }
        self.server.check_invariants().expect("invariants hold");
        assert_eq!(self.server.connection_count(), self.live.len());
    }

    pub fn received(&mut self, id: ConnId) -> Vec<u8> {
        std::mem::take(&mut self.peers.get_mut(&id).unwrap().received)
    }

    pub fn is_closed(&self, id: ConnId) -> bool {
        self.peers[&id].closed
    }

    /// Takes exactly one response from what `id` received; panics if there is none.
    pub fn response(&mut self, id: ConnId) -> Resp {
        let mut all = self.received(id);
        let (resp, used) = Resp::parse(&all).unwrap_or_else(|| {
            panic!(
                "no complete response on {id:?}: {:?}",
                String::from_utf8_lossy(&all)
            )
        });
        all.drain(..used);
        self.peers.get_mut(&id).unwrap().received = all;
        resp
    }

    /// Every complete response `id` received.
    pub fn responses(&mut self, id: ConnId) -> Vec<Resp> {
        let mut out = Vec::new();
        while let Some((r, used)) = Resp::parse(&self.peers[&id].received) {
            self.peers.get_mut(&id).unwrap().received.drain(..used);
            out.push(r);
        }
        out
    }

    /// A request on a fresh connection; returns the connection and its response.
    pub fn request(&mut self, raw: &str) -> (ConnId, Resp) {
        let c = self.connect();
        self.feed(c, raw);
        let r = self.response(c);
        (c, r)
    }

    pub fn get(&mut self, target: &str) -> Resp {
        self.request(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"))
            .1
    }

    pub fn publish(&mut self, room: &str, text: &str) -> Resp {
        self.request(&publish_req(room, text)).1
    }
}

pub fn get_req(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n")
}

pub fn publish_req(room: &str, text: &str) -> String {
    format!(
        "POST /publish?room={room} HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

impl Resp {
    /// Parses one response from the start of `data`: `(response, bytes used)`.
    pub fn parse(data: &[u8]) -> Option<(Resp, usize)> {
        let end = data.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&data[..end]).ok()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(": ").expect("header line");
                (k.to_string(), v.to_string())
            })
            .collect();
        let len = if status == 100 || status == 204 {
            0
        } else {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap())
                .unwrap_or(0)
        };
        if data.len() < end + len {
            return None;
        }
        let resp = Resp {
            status,
            headers,
            body: data[end..end + len].to_vec(),
            raw: data[..end + len].to_vec(),
        };
        Some((resp, end + len))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}
