//! What the allocation tests share (`allocs.rs`, `hostile.rs`): a global allocator that counts
//! this thread's allocation calls and live heap bytes, and [`Bare`], a server driven directly
//! (without the simulation harness, whose own bookkeeping would allocate), as an adapter would.
//!
//! Each test binary that declares `mod counting;` gets the counting allocator as its global
//! allocator. Counts are per thread, so tests running in parallel do not disturb each other.
// A counting global allocator needs `unsafe impl GlobalAlloc`: test code only, every call
// forwarded to the system allocator.
#![allow(unsafe_code)]
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use parlor_core::{Config, ConnId, Output, Server};

use crate::sim;

struct Counting;

thread_local! {
    /// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) made by this thread.
    static CALLS: Cell<usize> = const { Cell::new(0) };
    /// Live bytes allocated by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(calls: usize, delta: isize) {
    let _ = CALLS.try_with(|c| c.set(c.get() + calls));
    let _ = LIVE.try_with(|c| c.set(c.get() + delta));
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, new_size as isize - layout.size() as isize);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocation calls this thread has made so far.
pub fn calls() -> usize {
    CALLS.with(Cell::get)
}

/// Heap bytes this thread has allocated and not freed.
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// A server driven directly, as an adapter would, on a clock that does not move.
pub struct Bare {
    pub server: Server,
    pub now: Instant,
    /// Bytes [`feed`](Bare::feed) saw sent (dropped as they come: only counted).
    pub received: usize,
}

impl Bare {
    pub fn new(config: Config) -> Bare {
        #[allow(clippy::disallowed_methods)] // the test picks the virtual clock's origin
        let now = Instant::now();
        Bare {
            server: Server::new(config, sim::EPOCH_MS, now),
            now,
            received: 0,
        }
    }

    /// A new connection from loopback.
    pub fn accept(&mut self) -> ConnId {
        self.server
            .handle_accept(IpAddr::V4(Ipv4Addr::LOCALHOST), self.now)
    }

    /// Hands `bytes` to `conn`, then reports every send flushed, counting its bytes: allocates
    /// nothing of its own, so the server's allocations are all that is counted.
    pub fn feed(&mut self, conn: ConnId, bytes: &[u8]) {
        self.server.handle_data(conn, bytes, self.now).unwrap();
        while let Some(out) = self.server.poll_output() {
            if let Output::Send { conn, data } = out {
                self.received += data.len();
                self.server
                    .handle_flushed(conn, data.len(), self.now)
                    .unwrap();
            }
        }
    }

    /// Drains the outputs: sends are reported flushed if `flush`, closes and aborts finished
    /// if `close`. Returns the sends.
    pub fn drain(&mut self, flush: bool, close: bool) -> Vec<(ConnId, bytes::Bytes)> {
        let mut sent = Vec::new();
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Send { conn, data } => {
                    if flush {
                        self.server
                            .handle_flushed(conn, data.len(), self.now)
                            .unwrap();
                    }
                    sent.push((conn, data));
                }
                Output::Close { conn } | Output::Abort { conn } if close => {
                    self.server.handle_closed(conn, self.now).unwrap()
                }
                _ => {}
            }
        }
        sent
    }
}
