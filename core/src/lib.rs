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
//! here is a third, serving Parlor behind the standard library's blocking `TcpListener` with a
//! thread per connection and a mutex around the core (simple rather than fast), then using it as
//! a client. (The example is kept in `core/doc/driving.md`: it reads the clock and opens sockets,
//! which nothing under `core/src` does.)
//!
#![doc = include_str!("../doc/driving.md")]
//!
//! ## Layout
//! One concern per file; each layer uses only the layers below it (see `ARCHITECTURE.md`).
//! * [`Server`] (`server.rs`): the `handle_*` inputs and `poll_*` outputs, and shutdown;
//!   `server/dispatch.rs` reads and routes requests, `server/carry.rs` carries out what a route
//!   decided, including a publish's fan-out.
//! * `routes/`: the `Route` of a request from its path, the methods each allows, and the
//!   handlers (`subscribe.rs`, `events.rs`, `publish.rs`), which return what to do.
//! * `conn/`: the connection states and every transition between them (`mod.rs`, with the
//!   state diagram; `held.rs`, a held poll; `stream.rs`, an event stream; `waiting.rs`, a
//!   request waiting for the shared log), the table's bookkeeping (`table.rs`), the
//!   per-address cap behind a proxy (`proxied.rs`) and the invariant check (`check.rs`).
//! * `log.rs`: the message log, in memory or shared: what the core keeps of the exchange with a
//!   broker and the rules of each room's cache; `server/shared.rs` and `server/cache.rs` drive it
//!   ([`Server::poll_broker`], [`Server::handle_broker`]). The contract is [`broker`].
//! * `timers.rs`: deadlines, at most one per connection, in one ordered set.
//! * `room.rs`: rooms, their bounded history and their waiters; `cursor.rs`: the cursor a
//!   client holds, parsed and displayed in one place.
//! * `batch.rs`: encoding a poll's answer (one message as text, a batch as JSON).
//! * `cors.rs`: the origin allow-list; `origin.rs`: scheme, host and port as the same-origin
//!   rule compares them; `forwarded/`: the client and origin behind a trusted proxy (the
//!   `Forwarded` syntax in `header.rs`); `rate.rs`: the publish token bucket.
//! * `sse.rs`: the bytes of an event stream.
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
mod origin;
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
    pub use crate::http::{HttpError, Method, ReadEvent, Request, RequestReader, Text, Version};
    pub use crate::response::{error, reason_phrase, Persist, Response, TEXT_PLAIN};
}
