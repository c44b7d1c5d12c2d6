//! `parlor-baseline`: the least a long-polling server can do, as the floor every benchmark figure
//! is compared against.
//!
//! Single-threaded mio. It accepts, finds the end of each request head (`\r\n\r\n`) and looks at
//! the request line only:
//! * `GET /subscribe...`: hold the connection;
//! * `POST /publish...`: read the `Content-Length` body, build one response containing it, write
//!   that same prebuilt response to every held connection, then answer `200` to the publisher;
//! * `GET /`: a prebuilt page (Parlor's own `index.html`); anything else: a prebuilt `404`.
//!
//! No rooms, no cursors, no history, no timeouts, no limits beyond a 64 KiB request buffer: a
//! subscriber that re-polls after a delivery misses whatever was published in between (the
//! cursor-less design the `stream` benchmark compares Parlor's cursors against).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const MAX_BUFFER: usize = 64 * 1024;

/// The same page Parlor serves at `/`, so that `GET /` moves the same number of bytes.
const PAGE: &str = include_str!("../../../core/assets/index.html");

/// A complete response with a correct `Content-Length`.
fn prebuilt(status: &str, extra: &str, body: &str) -> Rc<[u8]> {
    Rc::from(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Bytes waiting to be written: shared prebuilt responses, written from `offset` on.
struct Conn {
    stream: TcpStream,
    inbuf: Vec<u8>,
    out: VecDeque<Rc<[u8]>>,
    offset: usize,
    held: bool,
    close_after_write: bool,
    /// Registered for writability: only while a write would block. Always watching for it
    /// would wake the loop once per ACK on every connection written to.
    watching_writes: bool,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    held: Vec<usize>,
    page: Rc<[u8]>,
    not_found: Rc<[u8]>,
    published: Rc<[u8]>,
    bad: Rc<[u8]>,
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().expect("default address");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                let v = args.next().unwrap_or_default();
                listen = match v.parse() {
                    Ok(a) => a,
                    Err(_) => fail(&format!("--listen {v}: expected IP:PORT")),
                };
            }
            // Accepted for command-line compatibility with the Parlor servers; the baseline has
            // no connection cap and no timeouts.
            "--max-connections" | "--poll-timeout" => {
                args.next();
            }
            "--help" | "-h" => {
                println!("usage: parlor-baseline [--listen IP:PORT]");
                return;
            }
            other => fail(&format!("unknown argument {other} (try --help)")),
        }
    }
    parlor_bench::raise_nofile_limit();
    let listener = match bind(listen) {
        Ok(l) => l,
        Err(e) => fail(&format!("cannot listen on {listen}: {e}")),
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let poll = Poll::new().unwrap_or_else(|e| fail(&format!("epoll: {e}")));
    let mut server = Server {
        poll,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        held: Vec::new(),
        page: Rc::from(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n{PAGE}",
                PAGE.len()
            )
            .into_bytes(),
        ),
        not_found: prebuilt("404 Not Found", "", "not found\n"),
        published: prebuilt("200 OK", "", "ok\n"),
        bad: prebuilt("400 Bad Request", "Connection: close\r\n", "bad request\n"),
    };
    server
        .poll
        .registry()
        .register(&mut server.listener, LISTENER, Interest::READABLE)
        .unwrap_or_else(|e| fail(&format!("register: {e}")));
    println!("parlor-baseline listening on http://{addr}");
    let _ = io::stdout().flush();
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(e) = server.poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            fail(&format!("poll: {e}"));
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                server.accept();
            } else {
                let id = ev.token().0;
                if ev.is_writable() {
                    server.flush(id);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    server.read(id);
                }
            }
        }
    }
}

/// A listener with a 1024-connection accept queue (mio's `bind` asks for only 128, which drops
/// SYNs when thousands of clients connect at once).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn fail(msg: &str) -> ! {
    eprintln!("parlor-baseline: {msg}");
    std::process::exit(2);
}

impl Server {
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let id = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(id), Interest::READABLE)
                        .is_err()
                    {
                        self.free.push(id);
                        continue;
                    }
                    self.conns[id] = Some(Conn {
                        stream,
                        inbuf: Vec::new(),
                        out: VecDeque::new(),
                        offset: 0,
                        held: false,
                        close_after_write: false,
                        watching_writes: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: drop this burst, keep serving.
                    eprintln!("parlor-baseline: accept: {e}");
                    return;
                }
            }
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut c) = self.conns.get_mut(id).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(id);
        }
    }

    fn read(&mut self, id: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => return self.close(id),
                Ok(n) => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    if c.inbuf.len() > MAX_BUFFER {
                        return self.close(id);
                    }
                    self.process(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(id),
            }
        }
    }

    /// Answers every complete request buffered on the connection (none while it is held).
    fn process(&mut self, id: usize) {
        loop {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            if c.held || c.close_after_write {
                return;
            }
            let Some(head_end) = parlor_bench::find_head_end(&c.inbuf) else {
                return;
            };
            let head = &c.inbuf[..head_end];
            if head.starts_with(b"GET /subscribe") {
                c.inbuf.drain(..head_end);
                c.held = true;
                self.held.push(id);
                return;
            }
            if head.starts_with(b"POST /publish") {
                let Some(len) = content_length(head) else {
                    c.close_after_write = true;
                    let bad = self.bad.clone();
                    return self.send(id, bad);
                };
                if c.inbuf.len() < head_end + len {
                    return;
                }
                let body = c.inbuf[head_end..head_end + len].to_vec();
                c.inbuf.drain(..head_end + len);
                self.publish(&body);
                let ok = self.published.clone();
                self.send(id, ok);
                continue;
            }
            let answer = if head.starts_with(b"GET / ") {
                self.page.clone()
            } else {
                self.not_found.clone()
            };
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                return;
            };
            c.inbuf.drain(..head_end);
            self.send(id, answer);
        }
    }

    /// One prebuilt response, written to every held connection.
    fn publish(&mut self, body: &[u8]) {
        let mut resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        resp.extend_from_slice(body);
        let resp: Rc<[u8]> = Rc::from(resp);
        let held = std::mem::take(&mut self.held);
        for &id in &held {
            if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
                // A slot may be listed twice (closed, reused, held again): deliver once.
                if c.held {
                    c.held = false;
                    self.send(id, resp.clone());
                }
            }
        }
        // Requests pipelined behind the polls just answered.
        for id in held {
            if self
                .conns
                .get(id)
                .and_then(Option::as_ref)
                .is_some_and(|c| !c.inbuf.is_empty())
            {
                self.process(id);
            }
        }
    }

    fn send(&mut self, id: usize, data: Rc<[u8]>) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        c.out.push_back(data);
        if c.out.len() == 1 {
            self.flush(id);
        }
    }

    fn flush(&mut self, id: usize) {
        let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        while let Some(front) = c.out.front() {
            match c.stream.write(&front[c.offset..]) {
                Ok(n) => {
                    c.offset += n;
                    if c.offset == front.len() {
                        c.out.pop_front();
                        c.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.watching_writes {
                        c.watching_writes = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if self
                            .poll
                            .registry()
                            .reregister(&mut c.stream, Token(id), interest)
                            .is_err()
                        {
                            self.close(id);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(id),
            }
        }
        if c.watching_writes {
            c.watching_writes = false;
            let _ = self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(id), Interest::READABLE);
        }
        if c.close_after_write {
            self.close(id);
        }
    }
}

/// The `Content-Length` of a request head; `Some(0)` when absent.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value.trim().parse().ok()?;
                return (n <= MAX_BUFFER).then_some(n);
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                return None;
            }
        }
    }
    Some(0)
}
