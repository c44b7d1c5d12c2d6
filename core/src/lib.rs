//! # parlor-core
//!
//! The sans-IO heart of Parlor, a long-polling (COMET) chat server. This crate performs **no
//! I/O whatsoever**: no sockets, no threads, no clock reads, no environment, no files. Bytes and
//! time come in as arguments; bytes to send come out as [`bytes::Bytes`].
//!
//! ## Layout
//! * [`http`]: the incremental HTTP/1.1 request reader (RFC 9112 framing and limits).
//! * [`response`]: encoding responses into `Bytes`, and the cache of constant responses.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod response;

#[cfg(test)]
mod http_tests;
