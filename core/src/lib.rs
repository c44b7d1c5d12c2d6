//! # parlor-core
//!
//! The sans-IO heart of Parlor, a long-polling (COMET) chat server. This crate performs **no
//! I/O whatsoever**: no sockets, no threads, no clock reads, no environment, no files. Bytes and
//! time come in as arguments; bytes to send come out as [`bytes::Bytes`].
//!
//! ## Layout
//! * [`http`]: the incremental HTTP/1.1 request reader (RFC 9112 framing and limits).
//! * [`response`]: encoding responses into `Bytes`, and the cache of constant responses.
//! * [`config`]: every limit and timeout, their defaults, validation, and the command line
//!   both server binaries share.
//! * [`Server`] (`server.rs`): the chat state machine: connections, routing, rooms and their
//!   history (`room.rs`), held polls, timers, metrics.
//! * `form.rs`: query strings, form and JSON publish bodies.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod form;
pub mod http;
pub mod response;
mod room;
mod server;

pub use config::Config;
pub use server::{ConnId, Error, Output, Server};
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

#[cfg(test)]
mod http_tests;
