//! Dispatch: reading requests off Open connections and asking the routes what to do.
//!
//! A connection whose bytes arrived (or whose held poll was just answered) is read while it is
//! Open; each complete request gets its [`Reply`] (persistence, `HEAD`, allow-listed origin),
//! passes the shutdown and DNS-rebinding checks, and is routed to an [`Action`], which
//! `carry.rs` carries out.

use std::time::Instant;

use bytes::Bytes;

use super::{Reply, Server};
use crate::cors;
use crate::forwarded::Client;
use crate::http::{HttpError, Method, ReadEvent, Request};
use crate::metrics::Gauges;
use crate::origin::Site;
use crate::response::{self, ErrorAnswer, Persist};
use crate::routes::{self, events, publish, subscribe, Action, Ctx, Route};
use crate::ConnId;

impl Server {
    /// Reads the buffered requests of connections whose poll was answered.
    pub(super) fn run_ready(&mut self, now: Instant) {
        while let Some(id) = self.conns.pop_ready() {
            self.advance(id, now);
        }
    }

    /// Reads and answers requests while the connection is Open, then settles its timer and
    /// read state.
    pub(super) fn advance(&mut self, id: ConnId, now: Instant) {
        while let Some(event) = self.conns.next_event(id) {
            match event {
                Ok(ReadEvent::Continue) => {
                    let data = Bytes::from_static(response::CONTINUE);
                    self.conns.send(id, data, &mut self.rooms);
                }
                Ok(ReadEvent::Request(request)) => self.handle_request(id, request, now),
                Err(HttpError { status, reason }) => {
                    // A head that parsed (e.g. a body too large) still gets its CORS headers.
                    let allowed = self.cors.index(self.conns.failed_origin(id));
                    let headers = self.cors.origin(allowed).map(cors::answer_headers);
                    let answer = ErrorAnswer {
                        headers: headers.as_ref().map_or(&[], |h| &h[..]),
                        ..ErrorAnswer::new(status, reason, self.conns.is_head(id))
                    };
                    self.conns.refuse(id, answer, &mut self.rooms, now)
                }
            }
        }
        self.conns.settle(id, &mut self.rooms, now);
    }

    fn handle_request(&mut self, id: ConnId, request: Request, now: Instant) {
        let reply = Reply {
            persist: Persist::for_request(request.version, request.keep_alive),
            head: request.method == Method::Head,
            cors: self.cors.index(request.headers.origin.as_deref()),
        };
        if self.shutting_down {
            let headers = self.cors.origin(reply.cors).map(cors::answer_headers);
            let answer = ErrorAnswer {
                headers: headers.as_ref().map_or(&[], |h| &h[..]),
                ..ErrorAnswer::new(503, "server is shutting down", reply.head)
            };
            return self.conns.refuse(id, answer, &mut self.rooms, now);
        }
        let Some(peer) = self.conns.peer(id) else {
            return;
        };
        let client = self.forwarding.client(peer, &request);
        if client.malformed {
            self.conns.metrics.forwarded_malformed += 1;
        }
        self.serve(id, &client, request, reply, now);
    }

    /// Routes a request from `client` and carries out what the route decided (a request read
    /// now, or one that waited for the shared log and is read again as it came).
    pub(super) fn serve(
        &mut self,
        id: ConnId,
        client: &Client,
        request: Request,
        reply: Reply,
        now: Instant,
    ) {
        let action = self.route(client, request, reply.persist, now);
        let proxied = client.forwarded.then_some(client.addr);
        self.carry_out(id, action, reply, proxied, now);
    }

    /// What the request from `client` asks for.
    fn route(
        &mut self,
        client: &Client,
        request: Request,
        persist: Persist,
        now: Instant,
    ) -> Action {
        // DNS rebinding: on loopback, only loopback (or --allow-host) names are served. Behind a
        // trusted proxy the name checked is the public one it forwarded.
        if self.config.listen_loopback {
            let forwarded = client.forwarded.then(|| client.site(None)).flatten();
            let authority = forwarded.as_ref().map(Site::authority);
            let host = match &authority {
                Some(a) => Some(a.as_str()),
                None => request.headers.host.as_deref(),
            };
            if !cors::host_allowed(host, &self.config.allow_hosts) {
                return Action::reject(421, "this server answers only to localhost");
            }
        }
        let Some(route) = Route::from_path(request.path()) else {
            return Action::reject(404, "not found");
        };
        let ctx = Ctx {
            config: &self.config,
            cors: &self.cors,
            // A room of the shared log takes its epoch from the log once loaded.
            epoch: if self.log.shared { "" } else { &self.epoch },
            persist,
            client,
            log: &self.log,
        };
        if request.method == Method::Options {
            return routes::preflight(&ctx, &request, route.allowed());
        }
        if !route.allows(request.method) {
            return Action::Reject {
                status: 405,
                reason: "method not allowed",
                header: Some(("Allow", route.allowed().to_string())),
            };
        }
        let head = request.method == Method::Head;
        match route {
            Route::Page(file) => Action::Answer(self.page.file(file).get(persist, head)),
            Route::Healthz if !self.log.up => Action::Reject {
                status: 503,
                reason: "message log unavailable",
                header: Some(("Retry-After", crate::conn::RETRY_AFTER_SECS.to_string())),
            },
            Route::Healthz => Action::Answer(routes::healthz(head, persist)),
            Route::Metrics => {
                let text = self.conns.metrics.text(Gauges {
                    connections: self.conns.len(),
                    held: self.conns.held(),
                    streams: self.conns.streams(),
                    rooms: self.rooms.len(),
                    rooms_created: self.rooms.created,
                    rooms_evicted: self.rooms.evicted,
                    broker: self.log.shared.then_some(crate::metrics::Broker {
                        up: self.log.up,
                        waiting: self.log.waits.len(),
                        failures: self.log.failures,
                    }),
                });
                Action::Answer(routes::metrics(&text, head, persist))
            }
            Route::Subscribe => match subscribe::handle(&ctx, &mut self.rooms, &request) {
                Action::Load { room, load } => Action::Park {
                    room,
                    load,
                    request: Box::new(request),
                },
                action => action,
            },
            Route::Events => match events::handle(&ctx, &mut self.rooms, &request) {
                Action::Load { room, load } => Action::Park {
                    room,
                    load,
                    request: Box::new(request),
                },
                action => action,
            },
            Route::Publish => {
                let from = publish::Sender {
                    peer: client.addr,
                    now,
                    time_ms: self.epoch_ms
                        + now.saturating_duration_since(self.start).as_millis() as u64,
                };
                publish::handle(&ctx, &mut self.rooms, &mut self.rate, from, request)
            }
        }
    }
}
