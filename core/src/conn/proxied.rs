//! The per-address connection cap behind a trusted proxy.
//!
//! A trusted proxy's connections are pooled and carry many clients' requests in turn, so they
//! are not counted per address when accepted. What one client behind the proxy can occupy is a
//! held poll or an event stream: the proxy keeps one connection to Parlor open for it. So, with
//! `--max-connections-per-ip` set, the polls and streams held through a trusted proxy are counted
//! per forwarded client address, and one past the cap is refused `503`, as a direct client's
//! connection past the cap is.

use std::collections::HashMap;

use core::net::IpAddr;

use crate::ConnId;

/// The polls and streams held through a trusted proxy, by connection and by forwarded client
/// address.
#[derive(Debug, Default)]
pub(crate) struct ProxiedHolds {
    by_conn: HashMap<ConnId, IpAddr>,
    per_client: HashMap<IpAddr, usize>,
}

impl ProxiedHolds {
    /// Counts a poll about to be held on `id` for `client`, unless that client already holds
    /// `cap` polls (`false`: refuse it). A cap of 0 is no cap, and nothing is counted.
    pub fn admit(&mut self, id: ConnId, client: IpAddr, cap: usize) -> bool {
        if cap == 0 {
            return true;
        }
        let count = self.per_client.entry(client).or_insert(0);
        if *count >= cap {
            return false;
        }
        *count += 1;
        self.by_conn.insert(id, client);
        true
    }

    /// The poll or stream on `id` ended (answered, timed out, ended, or its connection closed).
    pub fn release(&mut self, id: ConnId) {
        let Some(client) = self.by_conn.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_client.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// The counts agree with the connections, each of which `is_held`.
    pub fn check(&self, is_held: impl Fn(ConnId) -> bool) -> Result<(), String> {
        let total: usize = self.per_client.values().sum();
        if total != self.by_conn.len() || self.per_client.values().any(|&n| n == 0) {
            return Err(format!(
                "proxied holds: {total} counted, {} connections",
                self.by_conn.len()
            ));
        }
        match self.by_conn.keys().find(|&&id| !is_held(id)) {
            Some(id) => Err(format!(
                "conn {}: counted as a proxied hold, not held",
                id.0
            )),
            None => Ok(()),
        }
    }
}
