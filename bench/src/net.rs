//! A single-threaded mio HTTP/1.1 client pool for the load generator: non-blocking connects
//! bound to chosen loopback source addresses, raw request bytes out, parsed responses in.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use crate::{parse_response, Response};

/// What happened on a connection, with the caller's tag for it.
#[derive(Debug)]
pub enum Ev {
    /// The TCP connection is established.
    Connected(usize),
    /// Everything sent so far has been written to the socket.
    Written(usize),
    /// A complete response, with the time it was parsed.
    Response(usize, Response, Instant),
    /// Bytes read on a raw connection ([`Net::connect_raw`]: an event stream), with the time
    /// they were read.
    Bytes(usize, Vec<u8>, Instant),
    /// The connection is gone (the pool already forgot it).
    Closed(usize, String),
}

struct Client {
    tag: usize,
    stream: TcpStream,
    connecting: bool,
    out: Vec<u8>,
    out_off: usize,
    inbuf: Vec<u8>,
    /// Hand every read up as bytes instead of parsing responses.
    raw: bool,
}

/// The pool. Connection ids are its own; events report the caller's tags.
pub struct Net {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Client>>,
    free: Vec<usize>,
    freed_this_turn: Vec<usize>,
    target: SocketAddr,
    /// More targets (several nodes): see [`spread`](Self::spread).
    targets: Vec<SocketAddr>,
    spread_below: usize,
    sources: Vec<IpAddr>,
    next_source: usize,
    readbuf: Box<[u8]>,
    /// Buffers of [`Ev::Bytes`] handed back ([`recycle`](Self::recycle)), for the next reads.
    spare: Vec<Vec<u8>>,
    open: usize,
}

impl Net {
    /// A pool aimed at `target`, spreading connections over `sources` loopback addresses
    /// (127.0.0.1, 127.0.0.2, ...) when the target is IPv4; 0 lets the kernel choose.
    pub fn new(target: SocketAddr, sources: usize) -> io::Result<Net> {
        let sources = match target {
            SocketAddr::V4(_) if sources > 0 => (0..sources.min(250))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Net {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            free: Vec::new(),
            freed_this_turn: Vec::new(),
            target,
            targets: vec![target],
            spread_below: 0,
            sources,
            next_source: 0,
            readbuf: vec![0u8; 256 * 1024].into_boxed_slice(),
            spare: Vec::new(),
            open: 0,
        })
    }

    /// Aims the pool at several targets (nodes of one service): tag `t` below `below` goes to
    /// `targets[t % k]`, a tag from `below` up to `targets[(t - below) % k]` (so the first
    /// tag at or above `below`, a lone publisher, goes to the first target). An empty list
    /// keeps the target given to [`new`](Self::new).
    pub fn spread(&mut self, targets: &[SocketAddr], below: usize) {
        if !targets.is_empty() {
            self.target = targets[0];
            self.targets = targets.to_vec();
        }
        self.spread_below = below;
    }

    fn target_of(&self, tag: usize) -> SocketAddr {
        let k = self.targets.len();
        if k <= 1 {
            return self.target;
        }
        let i = if tag < self.spread_below {
            tag
        } else {
            tag - self.spread_below
        };
        self.targets[i % k]
    }

    /// Open connections (connecting or established).
    pub fn open(&self) -> usize {
        self.open
    }

    /// Like [`connect`](Self::connect), for a connection whose reads are reported as
    /// [`Ev::Bytes`] rather than parsed (a Server-Sent Events stream).
    pub fn connect_raw(&mut self, tag: usize) -> io::Result<usize> {
        let id = self.connect(tag)?;
        if let Some(c) = self.conns[id].as_mut() {
            c.raw = true;
        }
        Ok(id)
    }

    /// Starts a non-blocking connect; `Connected(tag)` or `Closed(tag, ..)` follows.
    pub fn connect(&mut self, tag: usize) -> io::Result<usize> {
        let target = self.target_of(tag);
        let domain = if target.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = Socket::new(domain, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        if !self.sources.is_empty() {
            let src = self.sources[self.next_source % self.sources.len()];
            self.next_source += 1;
            socket.bind(&SocketAddr::new(src, 0).into())?;
        }
        match socket.connect(&target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let std_stream: std::net::TcpStream = socket.into();
        let mut stream = TcpStream::from_std(std_stream);
        let id = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conns[id] = Some(Client {
            tag,
            stream,
            connecting: true,
            out: Vec::new(),
            out_off: 0,
            inbuf: Vec::new(),
            raw: false,
        });
        self.open += 1;
        Ok(id)
    }

    /// Queues bytes on a connection and writes what the socket takes now. Returns false when
    /// the connection is unknown (closed).
    pub fn send(&mut self, id: usize, data: &[u8], evs: &mut Vec<Ev>) -> bool {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return false;
        };
        c.out.extend_from_slice(data);
        if !c.connecting {
            self.flush(id, evs);
        }
        true
    }

    /// Hands back the buffer of an [`Ev::Bytes`] once read, so the next read on a raw
    /// connection reuses it instead of allocating (a stream read is small and frequent).
    pub fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < 1024 && bytes.capacity() <= 64 * 1024 {
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    /// Closes a connection without an event.
    pub fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.freed_this_turn.push(id);
            self.open -= 1;
        }
    }

    /// Closes everything.
    pub fn close_all(&mut self) {
        for id in 0..self.conns.len() {
            self.close(id);
        }
        self.free.append(&mut self.freed_this_turn);
    }

    fn fail(&mut self, id: usize, why: String, evs: &mut Vec<Ev>) {
        if let Some(c) = self.conns.get(id).and_then(Option::as_ref) {
            evs.push(Ev::Closed(c.tag, why));
            self.close(id);
        }
    }

    fn flush(&mut self, id: usize, evs: &mut Vec<Ev>) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        if c.out_off == c.out.len() {
            return;
        }
        while c.out_off < c.out.len() {
            match c.stream.write(&c.out[c.out_off..]) {
                Ok(0) => return self.fail(id, "write returned 0".into(), evs),
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(id, format!("write: {e}"), evs),
            }
        }
        c.out.clear();
        c.out_off = 0;
        evs.push(Ev::Written(c.tag));
    }

    /// Reads what `id` has. `drain`: read until `WouldBlock` (the peer may have closed, or
    /// the socket reported an error); otherwise a short read ends it, since it emptied the
    /// socket and bytes arriving after it raise a new edge-triggered event (epoll(7)): that
    /// saves one failing read per wake-up, which is half the reads of a stream getting a small
    /// write at a time.
    fn read(&mut self, id: usize, drain: bool, evs: &mut Vec<Ev>) {
        let whole = self.readbuf.len();
        let short = |n: usize| !drain && n < whole;
        loop {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            match c.stream.read(&mut self.readbuf) {
                Ok(0) => {
                    let why = if c.inbuf.is_empty() {
                        "closed by server".to_string()
                    } else {
                        "closed by server mid-response".to_string()
                    };
                    return self.fail(id, why, evs);
                }
                Ok(n) if c.raw => {
                    let mut bytes = self.spare.pop().unwrap_or_default();
                    bytes.extend_from_slice(&self.readbuf[..n]);
                    evs.push(Ev::Bytes(c.tag, bytes, Instant::now()));
                    if short(n) {
                        return;
                    }
                }
                Ok(n) => {
                    c.inbuf.extend_from_slice(&self.readbuf[..n]);
                    let mut used = 0;
                    let mut close = false;
                    loop {
                        match parse_response(&c.inbuf[used..], false) {
                            Ok(Some((resp, n))) => {
                                used += n;
                                close |= resp.close;
                                evs.push(Ev::Response(c.tag, resp, Instant::now()));
                                if close {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                return self.fail(id, format!("bad response: {e:?}"), evs);
                            }
                        }
                    }
                    c.inbuf.drain(..used);
                    if close {
                        return self.fail(id, "server closed after response".into(), evs);
                    }
                    if short(n) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(id, format!("read: {e}"), evs),
            }
        }
    }

    /// Waits up to `timeout` for readiness and handles it, appending events.
    pub fn turn(&mut self, timeout: Duration, evs: &mut Vec<Ev>) {
        self.free.append(&mut self.freed_this_turn);
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("parlor-load: poll: {e}");
            }
            return;
        }
        let ready: Vec<(usize, bool, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_writable(),
                    e.is_readable() || e.is_read_closed(),
                    e.is_read_closed(),
                    e.is_error(),
                )
            })
            .collect();
        for (id, writable, readable, closed, error) in ready {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if c.connecting {
                if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                    self.fail(id, format!("connect: {e}"), evs);
                    continue;
                }
                match c.stream.peer_addr() {
                    Ok(_) => {
                        c.connecting = false;
                        evs.push(Ev::Connected(c.tag));
                        self.flush(id, evs);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected && !error => continue,
                    Err(e) => {
                        self.fail(id, format!("connect: {e}"), evs);
                        continue;
                    }
                }
            } else if writable {
                self.flush(id, evs);
            }
            if readable || error {
                self.read(id, closed || error, evs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_sends_subscribers_round_robin_and_a_lone_publisher_to_the_first_node() {
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:1003".parse().unwrap();
        let mut net = Net::new(a, 0).unwrap();
        assert_eq!(net.target_of(7), a);
        net.spread(&[a, b, c], 10);
        let subs: Vec<_> = (0..4).map(|t| net.target_of(t)).collect();
        assert_eq!(subs, [a, b, c, a]);
        // Tags from 10 up: the publishers, round-robin from the first node.
        let pubs: Vec<_> = (10..14).map(|t| net.target_of(t)).collect();
        assert_eq!(pubs, [a, b, c, a]);
        // An empty list keeps the single target.
        let mut one = Net::new(b, 0).unwrap();
        one.spread(&[], 5);
        assert_eq!(one.target_of(3), b);
    }
}
