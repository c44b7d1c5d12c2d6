//! HTTP/1.1 for Parlor (RFC 9112), with no I/O: requests in, responses out.
//!
//! * `request.rs`: the incremental [`RequestReader`] of one connection, its [`Limits`] and the
//!   [`HttpError`]s it answers; its tests run every fixture whole, byte by byte and with
//!   trailing data.
//! * `head.rs`: what a [`Request`] is, and parsing a complete head into one (the request line,
//!   the header fields, then the framing decisions).
//! * `chunked.rs`: decoding the chunked transfer coding.
//! * [`response`]: encoding responses into `Bytes`, and the cache of constant responses.

mod chunked;
mod head;
mod request;
pub mod response;

pub use head::{Method, Request, Text, Version};
pub use request::{HttpError, Limits, ReadEvent, RequestReader, MAX_HEADERS_CAP};
