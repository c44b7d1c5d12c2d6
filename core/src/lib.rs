//! # parlor-core
//!
//! The sans-IO heart of Parlor, a long-polling (COMET) chat server. This crate performs **no
//! I/O whatsoever**: no sockets, no threads, no clock reads, no environment, no files. Bytes and
//! time come in as arguments; bytes to send come out as [`bytes::Bytes`].
//!
//! ## Driving it
//!
//! One contract, written on [`Server`]: feed an input with the current time, drain
//! [`Server::poll_output`] until it is empty, and wake up at [`Server::poll_timeout`] to call
//! [`Server::handle_timeout`]. The adapters `parlor-mio` and `parlor-smol` are two such loops;
//! here is a third, serving Parlor behind a blocking `std::net::TcpListener` with a thread per
//! connection and a mutex around the core (simple rather than fast), then using it as a client:
//!
//! ```
//! use std::collections::HashMap;
//! use std::io::{Read, Write};
//! use std::net::{Shutdown, TcpListener, TcpStream};
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
//! use parlor_core::{Config, ConnId, Output, Server};
//!
//! struct Shared { server: Server, sockets: HashMap<ConnId, TcpStream> }
//!
//! /// Carries out every output of the core; called after each input, with the lock held.
//! fn drain(sh: &mut Shared, now: Instant) {
//!     while let Some(out) = sh.server.poll_output() {
//!         match out {
//!             Output::Send { conn, data } => {
//!                 if let Some(s) = sh.sockets.get_mut(&conn) {
//!                     if s.write_all(&data).is_ok() {
//!                         let _ = sh.server.handle_flushed(conn, data.len(), now);
//!                     }
//!                 }
//!             }
//!             // The reader thread sees the shutdown and reports the close.
//!             Output::Close { conn } | Output::Abort { conn } => {
//!                 if let Some(s) = sh.sockets.get(&conn) { let _ = s.shutdown(Shutdown::Both); }
//!             }
//!             Output::PauseRead { .. } | Output::ResumeRead { .. } => {}
//!         }
//!     }
//! }
//!
//! fn serve(listener: TcpListener) {
//!     let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
//!     let server = Server::new(Config::default(), epoch, Instant::now());
//!     let shared = Arc::new(Mutex::new(Shared { server, sockets: HashMap::new() }));
//!     let timer = Arc::clone(&shared);
//!     std::thread::spawn(move || loop {
//!         std::thread::sleep(Duration::from_millis(50));
//!         let mut sh = timer.lock().unwrap();
//!         sh.server.handle_timeout(Instant::now());
//!         drain(&mut sh, Instant::now());
//!     });
//!     for stream in listener.incoming().flatten() {
//!         let mut sh = shared.lock().unwrap();
//!         let id = sh.server.handle_accept(stream.peer_addr().unwrap().ip(), Instant::now());
//!         sh.sockets.insert(id, stream.try_clone().unwrap());
//!         drain(&mut sh, Instant::now());
//!         let shared = Arc::clone(&shared);
//!         std::thread::spawn(move || {
//!             let mut stream = stream;
//!             let mut buf = [0u8; 4096];
//!             while let Ok(n @ 1..) = stream.read(&mut buf) {
//!                 let mut sh = shared.lock().unwrap();
//!                 if sh.server.handle_data(id, &buf[..n], Instant::now()).is_err() { break; }
//!                 drain(&mut sh, Instant::now());
//!             }
//!             let mut sh = shared.lock().unwrap();
//!             sh.sockets.remove(&id);
//!             let _ = sh.server.handle_closed(id, Instant::now()); // frees the slot
//!             drain(&mut sh, Instant::now());
//!         });
//!     }
//! }
//!
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! std::thread::spawn(move || serve(listener));
//!
//! // A subscriber asks for everything in room "doc" (nothing yet, so it is held)...
//! let mut sub = TcpStream::connect(addr)?;
//! sub.write_all(b"GET /subscribe?room=doc&since=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//! // ...and a publish answers it.
//! let mut publisher = TcpStream::connect(addr)?;
//! publisher.write_all(b"POST /publish?room=doc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")?;
//! let mut answer = String::new();
//! sub.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.ends_with("\r\n\r\nhello"));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Layout
//! One concern per file; each layer uses only the layers below it (see `ARCHITECTURE.md`).
//! * [`Server`] (`server.rs`): the `handle_*` inputs and `poll_*` outputs, shutdown, and the
//!   dispatch that carries out what a route decided, including a publish's fan-out.
//! * `routes/`: the `Route` of a request from its path, the methods each
//!   allows, and the handlers (`subscribe.rs`, `publish.rs`), which return what to do.
//! * `conn/`: the connection states and every transition between them (`mod.rs`, with the
//!   state diagram; `waiting.rs`, a request waiting for the shared log), the table's
//!   bookkeeping (`table.rs`), and the invariant check (`check.rs`).
//! * `log.rs`: the message log, in memory or shared: what the core keeps of the exchange with a
//!   broker and the rules of each room's cache; `server/shared.rs` drives it
//!   ([`Server::poll_broker`], [`Server::handle_broker`]). The contract is [`broker`].
//! * `timers.rs`: deadlines, at most one per connection, in one ordered set.
//! * `room.rs`: rooms, their bounded history and their waiters; `cursor.rs`: the cursor a
//!   client holds, parsed and displayed in one place.
//! * `batch.rs`: encoding a poll's answer (one message as text, a batch as JSON).
//! * `cors.rs`: the origin allow-list; `rate.rs`: the publish token bucket.
//! * `page.rs`: the chat page's files and their CSP; `metrics.rs`: the counters and their
//!   Prometheus text.
//! * `form.rs`: query strings, form and JSON publish bodies.
//! * `http/`: the incremental HTTP/1.1 request reader (`request.rs`: RFC 9112 framing and the
//!   [`Limits`]; `head.rs`, `chunked.rs`), and encoding responses into `Bytes` with the cache of
//!   constant responses (`response.rs`). Private: an embedder sees HTTP only as bytes.
//! * [`config`]: every limit and timeout, their defaults and validation (the command line of
//!   the binaries is in `parlor-os`).
//! * [`broker`]: the contract with a shared message log (Redis, in `parlor-os`), as plain data.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
pub mod broker;
pub mod config;
mod conn;
mod cors;
mod cursor;
mod form;
mod forwarded;
mod http;
mod log;
mod metrics;
mod page;
mod rate;
mod room;
mod routes;
mod server;
mod sse;
mod timers;

// `crate::response` is the response encoder wherever the crate answers.
use http::response;

pub use config::{Config, ConfigError};
pub use forwarded::TrustedProxy;
pub use http::{Limits, MAX_HEADERS_CAP};
pub use server::{ConnId, Error, Output, Server};

/// What the microbenchmarks (`bench/benches/core.rs`) and the fuzz harness (`fuzz/harness`)
/// reach below the public API: the request reader and the response encoder. Not part of the
/// API: hidden from the docs, no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::http::{HttpError, Method, ReadEvent, Request, RequestReader, Version};
    pub use crate::response::{error, reason_phrase, Persist, Response, TEXT_PLAIN};
}
