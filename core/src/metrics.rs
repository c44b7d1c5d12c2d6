//! The counters behind `/metrics`, and their Prometheus text.

use std::collections::HashMap;
use std::fmt::Write;

/// Counters for `/metrics`. Gauges that the server can count itself (connections, rooms, held
/// polls) are passed in when the text is built.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub accepted: u64,
    pub requests: u64,
    pub published: u64,
    pub delivered: u64,
    pub bytes_sent: u64,
    /// Message events sent on event streams (one per message per stream).
    pub events_sent: u64,
    /// Event streams cut off for not reading (past the unsent-bytes cap).
    pub stream_cutoffs: u64,
    /// Requests from a trusted proxy whose forwarding headers did not parse.
    pub forwarded_malformed: u64,
    /// Requests answered with an error, by status.
    rejected: HashMap<u16, u64>,
}

/// The gauges: what is open right now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gauges {
    pub connections: usize,
    pub held: usize,
    pub streams: usize,
    pub rooms: usize,
    pub rooms_created: u64,
    pub rooms_evicted: u64,
    /// With a shared log: its state.
    pub broker: Option<Broker>,
}

/// The shared log's state, for `/metrics`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Broker {
    /// The broker reported `Up` last.
    pub up: bool,
    /// Requests waiting for the log (publishes being stored, polls whose room is loading).
    pub waiting: usize,
    /// Appends and fetches that failed or timed out.
    pub failures: u64,
}

impl Metrics {
    /// Counts a request answered with an error.
    pub fn reject(&mut self, status: u16) {
        *self.rejected.entry(status).or_insert(0) += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn text(&self, g: Gauges) -> Vec<u8> {
        let table: [(&str, &str, &str, u64); 14] = [
            (
                "parlor_connections",
                "gauge",
                "Open connections.",
                g.connections as u64,
            ),
            (
                "parlor_held_polls",
                "gauge",
                "Long-polls being held.",
                g.held as u64,
            ),
            (
                "parlor_sse_streams",
                "gauge",
                "Server-Sent Events streams open.",
                g.streams as u64,
            ),
            ("parlor_rooms", "gauge", "Rooms.", g.rooms as u64),
            (
                "parlor_connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.accepted,
            ),
            (
                "parlor_requests_total",
                "counter",
                "Requests read.",
                self.requests,
            ),
            (
                "parlor_messages_published_total",
                "counter",
                "Messages published.",
                self.published,
            ),
            (
                "parlor_messages_delivered_total",
                "counter",
                "Messages delivered to subscribers (one per message per response).",
                self.delivered,
            ),
            (
                "parlor_bytes_sent_total",
                "counter",
                "Response bytes written to sockets (reported flushed by the adapter).",
                self.bytes_sent,
            ),
            (
                "parlor_sse_events_sent_total",
                "counter",
                "Message events sent on event streams (one per message per stream).",
                self.events_sent,
            ),
            (
                "parlor_sse_stream_cutoffs_total",
                "counter",
                "Event streams cut off for not reading their events.",
                self.stream_cutoffs,
            ),
            (
                "parlor_forwarded_malformed_total",
                "counter",
                "Requests from a trusted proxy with malformed forwarding headers (taken as direct).",
                self.forwarded_malformed,
            ),
            (
                "parlor_rooms_created_total",
                "counter",
                "Rooms created.",
                g.rooms_created,
            ),
            (
                "parlor_rooms_evicted_total",
                "counter",
                "Rooms freed: empty, idle past --room-idle, or evicted for a new room.",
                g.rooms_evicted,
            ),
        ];
        let mut s = String::with_capacity(1024);
        for (name, kind, help, value) in table {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        if let Some(b) = g.broker {
            let broker: [(&str, &str, &str, u64); 3] = [
                (
                    "parlor_broker_up",
                    "gauge",
                    "Whether the shared message log is reachable (1) or not (0).",
                    u64::from(b.up),
                ),
                (
                    "parlor_broker_waiting",
                    "gauge",
                    "Requests waiting for the shared message log.",
                    b.waiting as u64,
                ),
                (
                    "parlor_broker_failures_total",
                    "counter",
                    "Requests to the shared message log that failed or timed out.",
                    b.failures,
                ),
            ];
            for (name, kind, help, value) in broker {
                let _ = write!(
                    s,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
                );
            }
        }
        let _ = write!(
            s,
            "# HELP parlor_requests_rejected_total Requests answered with an error, by status.\n\
             # TYPE parlor_requests_rejected_total counter\n"
        );
        let mut rejected: Vec<_> = self.rejected.iter().collect();
        rejected.sort();
        for (status, n) in rejected {
            let _ = writeln!(
                s,
                "parlor_requests_rejected_total{{status=\"{status}\"}} {n}"
            );
        }
        s.into_bytes()
    }
}
