//! Hostile traffic (issue 12): requests legal one by one but hostile in sum must not deny the
//! chat to others. Each scenario here failed on the core before the fix it names.
mod counting;
mod sim;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use counting::{live, Bare};
use parlor_core::{Config, ConfigError, ConnId, Output};
use sim::{get_req, publish_req, Sim};

// --- helpers ----------------------------------------------------------------------------------

fn metric(s: &mut Sim, name: &str) -> u64 {
    let text = s.get("/metrics").text().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn json_get(s: &mut Sim, target: &str) -> (u16, serde_json::Value, usize) {
    let r = s.get(target);
    let v = if r.status == 200 {
        serde_json::from_slice(&r.body).expect("JSON body")
    } else {
        serde_json::Value::Null
    };
    (r.status, v, r.body.len())
}

fn form_publish_req(room: &str, body: &str) -> String {
    format!(
        "POST /publish?room={room} HTTP/1.1\r\nHost: h\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

// --- 1. answers bounded by bytes --------------------------------------------------------------

#[test]
fn a_history_of_escaped_text_loads_in_pieces() {
    // Sixteen messages of 16 KiB of `<` are 1.5 MiB of JSON: over the 1 MiB unsent cap in one
    // answer, which was aborted before a byte was written.
    let mut s = Sim::new(Config {
        history_bytes: 1 << 20,
        ..Config::default()
    });
    let text = "<".repeat(16 * 1024);
    for _ in 0..16 {
        assert_eq!(s.publish("r", &text).status, 200);
    }
    let budget = Config::default().batch_budget();
    let mut target = "/subscribe?room=r&since=0&format=json".to_owned();
    let mut loaded = 0;
    for _ in 0..16 {
        let (status, v, len) = json_get(&mut s, &target);
        assert_eq!(status, 200);
        assert!(len <= budget, "a batch of {len} bytes, budget {budget}");
        let messages = v["messages"].as_array().unwrap();
        assert!(!messages.is_empty());
        loaded += messages.len();
        if loaded == 16 {
            break;
        }
        target = format!(
            "/subscribe?room=r&since={}&format=json",
            v["next"].as_str().unwrap()
        );
    }
    assert_eq!(loaded, 16, "the whole history loads");
    assert!(
        !s.log.iter().any(|o| matches!(o, Output::Abort { .. })),
        "no answer was cut off"
    );
}

#[test]
fn a_batch_always_carries_one_message() {
    let mut s = Sim::new(Config {
        max_unsent_bytes: 8_000,
        max_message_bytes: 1_000,
        history_bytes: 100_000,
        ..Config::default()
    });
    let text = "\"".repeat(1_000);
    s.publish("r", &text);
    s.publish("r", &text);
    let (status, v, _) = json_get(&mut s, "/subscribe?room=r&since=0&format=json");
    assert_eq!(status, 200);
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["next"].as_str().unwrap(), s.cursor(1));
}

#[test]
fn configs_where_one_message_cannot_be_sent_are_refused() {
    let config = Config {
        max_unsent_bytes: 64 * 1024,
        ..Config::default()
    };
    match config.validate() {
        Err(ConfigError { field, reason }) => {
            assert_eq!(field, "max_unsent_bytes", "{reason}");
            assert!(reason.contains("`max_message_bytes`"), "{reason}");
        }
        Ok(()) => panic!("16 KiB messages need up to 96 KiB as JSON"),
    }
    let config = Config {
        max_unsent_bytes: 64 * 1024,
        max_message_bytes: 8 * 1024,
        ..Config::default()
    };
    assert_eq!(config.validate(), Ok(()));
}

fn last_send(s: &Sim, conn: ConnId) -> bytes::Bytes {
    s.log
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Send { conn: c, data } if *c == conn => Some(data.clone()),
            _ => None,
        })
        .expect("a send")
}

#[test]
fn the_batch_from_the_start_is_encoded_once_per_room() {
    let mut s = Sim::default();
    s.publish("r", "one");
    s.publish("r", "two");
    let since0 = get_req("/subscribe?room=r&since=0&format=json");
    let (a, _) = s.request(&since0);
    let (b, _) = s.request(&since0);
    let oldest = get_req(&format!(
        "/subscribe?room=r&since={}&format=json",
        s.cursor(0)
    ));
    let (c, _) = s.request(&oldest);
    let (da, db, dc) = (last_send(&s, a), last_send(&s, b), last_send(&s, c));
    assert_eq!(da, db);
    assert_eq!(da.as_ptr(), db.as_ptr(), "since=0 shares one buffer");
    assert_eq!(da.as_ptr(), dc.as_ptr(), "so does the oldest cursor");
    // A publish changes the room: the next answer is new and carries the new message.
    s.publish("r", "three");
    let (d, r) = s.request(&since0);
    assert_ne!(last_send(&s, d).as_ptr(), da.as_ptr());
    assert!(r.text().contains("three"));
}

// --- 2. the room lifecycle --------------------------------------------------------------------

#[test]
fn refused_requests_create_no_room() {
    let mut s = Sim::new(Config {
        publish_rate: 1,
        publish_burst: 1,
        ..Config::default()
    });
    assert_eq!(s.publish("ok", "x").status, 200);
    let refused = [
        publish_req("e1", " "),
        "POST /publish?room=e2 HTTP/1.1\r\nHost: h\r\nContent-Type: image/png\r\n\
         Content-Length: 1\r\n\r\nx"
            .to_owned(),
        "POST /publish?room=e3 HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.example\r\n\
         Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
            .to_owned(),
        publish_req("e4", "rate limited"),
        "GET /subscribe?room=e5 HTTP/1.1\r\nHost: h\r\nOrigin: http://evil.example\r\n\r\n"
            .to_owned(),
        get_req("/subscribe?room=e6&since=zz"),
    ];
    let mut statuses = Vec::new();
    for raw in &refused {
        statuses.push(s.request(raw).1.status);
    }
    assert_eq!(statuses, [400, 415, 403, 429, 403, 400]);
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    assert_eq!(metric(&mut s, "parlor_rooms_created_total"), 1);
}

#[test]
fn pipelined_empty_publishes_do_not_fill_the_room_table() {
    let mut s = Sim::new(Config {
        max_rooms: 16,
        ..Config::default()
    });
    let c = s.connect();
    let burst: String = (0..1_100)
        .map(|i| publish_req(&format!("r{i}"), " "))
        .collect();
    s.feed(c, burst);
    assert_eq!(s.responses(c).len(), 1_100);
    assert_eq!(metric(&mut s, "parlor_rooms"), 0);
    assert_eq!(s.publish("fresh", "hello").status, 200);
}

#[test]
fn an_empty_room_is_freed_when_its_last_poll_leaves() {
    let mut s = Sim::default();
    let c = s.connect();
    s.feed(c, get_req("/subscribe?room=brief"));
    assert_eq!(s.server.held_count(), 1);
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    s.advance(Config::default().poll_timeout + Duration::from_secs(1));
    assert_eq!(s.response(c).status, 204);
    assert_eq!(metric(&mut s, "parlor_rooms"), 0);
    assert_eq!(metric(&mut s, "parlor_rooms_evicted_total"), 1);
}

#[test]
fn an_idle_room_is_freed_and_comes_back_in_a_new_epoch() {
    let idle = Duration::from_secs(600);
    let mut s = Sim::new(Config {
        room_idle: idle,
        ..Config::default()
    });
    let old = s
        .publish("r", "before")
        .header("Parlor-Cursor")
        .unwrap()
        .to_owned();
    s.advance(idle / 2);
    assert_eq!(metric(&mut s, "parlor_rooms"), 1);
    // The timer is the core's: a deadline exists with no connection open.
    assert!(s.server.poll_timeout().is_some());
    s.advance(idle);
    assert_eq!(metric(&mut s, "parlor_rooms"), 0);
    assert_eq!(metric(&mut s, "parlor_rooms_evicted_total"), 1);
    let new = s
        .publish("r", "after")
        .header("Parlor-Cursor")
        .unwrap()
        .to_owned();
    let (old_epoch, new_epoch) = (
        old.rsplit_once('-').unwrap().0,
        new.rsplit_once('-').unwrap().0,
    );
    assert_ne!(old_epoch, new_epoch, "{old} then {new}");
    assert!(new_epoch.len() <= 16 && new_epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
    // The old cursor is of another epoch: the client gets the room from its start.
    let r = s.get(&format!("/subscribe?room=r&since={old}"));
    assert_eq!((r.status, r.text()), (200, "after"));
}

#[test]
fn at_the_room_cap_the_room_idle_longest_makes_way() {
    let mut s = Sim::new(Config {
        max_rooms: 2,
        ..Config::default()
    });
    s.publish("a", "x");
    s.advance(Duration::from_secs(1));
    s.publish("b", "x");
    s.advance(Duration::from_secs(1));
    let held = s.connect();
    s.feed(held, get_req("/subscribe?room=b"));
    assert_eq!(s.publish("c", "x").status, 200, "a was idle: it made way");
    assert_eq!(metric(&mut s, "parlor_rooms_evicted_total"), 1);
    // b is in use (held), c has the newest activity; d takes c's place, not b's.
    assert_eq!(s.publish("d", "x").status, 200);
    let r = s.get("/subscribe?room=b&since=0");
    assert_eq!((r.status, r.text()), (200, "x"), "b kept its history");
    // Now b's poll was answered by nothing; hold polls in both rooms: every room is in use.
    let other = s.connect();
    s.feed(other, get_req("/subscribe?room=d"));
    let r = s.publish("e", "x");
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("2")));
}

// --- 3. exact accounting ----------------------------------------------------------------------

/// Live heap bytes of a full history, publishing `body(i)` messages in one room.
fn history_cost(config: &Config, request: impl Fn(usize) -> String) -> isize {
    let mut bare = Bare::new(config.clone());
    let c = bare
        .server
        .handle_accept(IpAddr::V4(Ipv4Addr::LOCALHOST), bare.now);
    // Warm up: the room, the connection's buffer and the metrics exist before measuring.
    bare.server
        .handle_data(c, request(0).as_bytes(), bare.now)
        .unwrap();
    drop(bare.drain(true, true));
    let before = live();
    for i in 1..400 {
        bare.server
            .handle_data(c, request(i).as_bytes(), bare.now)
            .unwrap();
        drop(bare.drain(true, true));
    }
    live() - before
}

#[test]
fn history_memory_stays_near_its_cap_whatever_the_encoding() {
    let config = Config {
        history_bytes: 128 * 1024,
        history_messages: 10_000,
        ..Config::default()
    };
    let cap = config.history_bytes as isize;
    let text = |i: usize| format!("{i:06}{}", "<".repeat(994));
    let plain = history_cost(&config, |i| publish_req("r", &text(i)));
    // Form-encoded: every `<` is `%3C`, three bytes on the wire for one kept.
    let form = history_cost(&config, |i| {
        form_publish_req(
            "r",
            &format!("message={}&id=k{i}", text(i).replace('<', "%3C")),
        )
    });
    for (what, used) in [("plain", plain), ("form", form)] {
        assert!(
            used <= cap * 3 / 2,
            "{what}: {used} live bytes for a history capped at {cap}"
        );
        assert!(
            used >= cap / 2,
            "{what}: {used} bytes: the history is not full?"
        );
    }
}

// --- 4. deadlines -----------------------------------------------------------------------------

#[test]
fn an_empty_line_starts_the_head_deadline() {
    let config = Config::default();
    let mut s = Sim::new(config.clone());
    let c = s.connect();
    s.feed(c, "\r\n");
    s.advance(config.head_timeout + Duration::from_secs(1));
    assert!(
        s.is_closed(c),
        "a CRLF kept the connection open past the head deadline"
    );
    // Empty lines that keep coming do not push it back either.
    let c = s.connect();
    for _ in 0..9 {
        s.feed(c, "\r\n");
        s.advance(config.head_timeout / 10);
    }
    s.feed(c, "\r\n");
    assert!(!s.is_closed(c));
    s.advance(config.head_timeout / 10 + Duration::from_secs(1));
    assert!(
        s.is_closed(c),
        "the deadline runs from the first empty line"
    );
}

// --- 5, 6. Host, Origin and absolute-form targets ----------------------------------------------

fn loopback() -> Config {
    Config {
        listen_loopback: true,
        // `h` is the simulation's own Host.
        allow_hosts: vec!["chat.example".into(), "h".into()],
        ..Config::default()
    }
}

fn req_with(method: &str, target: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\n{headers}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn on_loopback_a_foreign_host_is_misdirected() {
    let mut s = Sim::new(loopback());
    // DNS rebinding: the page's name now points at 127.0.0.1, but its requests still name it.
    let rebind = "Host: rebind.example:8080\r\nOrigin: http://rebind.example:8080\r\n";
    let (_, r) = s.request(&req_with("POST", "/publish?room=r", rebind, "x"));
    assert_eq!(r.status, 421, "{}", r.text());
    let (_, r) = s.request(&req_with("GET", "/subscribe?room=r", rebind, ""));
    assert_eq!(r.status, 421);
    for host in [
        "localhost:8080",
        "127.0.0.1",
        "[::1]:1",
        "chat.example",
        "CHAT.example:80",
    ] {
        let (_, r) = s.request(&req_with(
            "GET",
            "/healthz",
            &format!("Host: {host}\r\n"),
            "",
        ));
        assert_eq!(r.status, 200, "{host}");
    }
    // Absolute-form: the authority is checked like Host, and the path served.
    let (_, r) = s.request("GET http://rebind.example/healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 421);
    let (_, r) = s.request("GET http://localhost:8080/healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, "ok\n"));
    assert_eq!(metric(&mut s, "parlor_rooms_created_total"), 0);
    // Not on loopback: any host is served.
    let mut open = Sim::default();
    let (_, r) = open.request(&req_with("GET", "/healthz", "Host: rebind.example\r\n", ""));
    assert_eq!(r.status, 200);
}

#[test]
fn same_origin_is_scheme_host_and_port_and_subscribes_follow_it() {
    let mut s = Sim::default();
    let headers = |origin: &str| format!("Host: chat.example:8080\r\nOrigin: {origin}\r\n");
    let (_, r) = s.request(&req_with(
        "POST",
        "/publish?room=r",
        &headers("http://chat.example:8080"),
        "x",
    ));
    assert_eq!(r.status, 200);
    let (_, r) = s.request(&req_with(
        "POST",
        "/publish?room=r",
        &headers("http://chat.example"),
        "x",
    ));
    assert_eq!(r.status, 403, "another port is another origin");
    let (_, r) = s.request(&req_with(
        "GET",
        "/subscribe?room=r&since=0",
        &headers("http://evil.example"),
        "",
    ));
    assert_eq!(r.status, 403, "a foreign page may not hold a poll");
    let (_, r) = s.request(&req_with(
        "GET",
        "/subscribe?room=r&since=0",
        &headers("http://chat.example:8080"),
        "",
    ));
    assert_eq!(r.status, 200);
}

// --- 7. bytes sent ----------------------------------------------------------------------------

#[test]
fn bytes_sent_counts_only_what_was_written() {
    let mut s = Sim::new(Config {
        max_unsent_bytes: 20_000,
        max_message_bytes: 1_000,
        ..Config::default()
    });
    let page = s.get("/").raw.len() as u64;
    let slow = s.connect();
    s.stall(slow);
    s.feed(slow, get_req("/").repeat(100));
    assert!(s.peers[&slow].aborted);
    let sent = metric(&mut s, "parlor_bytes_sent_total");
    assert!(
        sent < 5 * page,
        "{sent} bytes counted sent; the stalled client read none of its {} bytes",
        100 * page
    );
    assert!(sent >= page, "the first page was written: {sent}");
}

// --- 8. shutdown ------------------------------------------------------------------------------

#[test]
fn shutdown_is_drained_once_every_answer_is_written() {
    let mut bare = Bare::new(Config::default());
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut held = Vec::new();
    for _ in 0..1_000 {
        let c = bare.server.handle_accept(peer, bare.now);
        bare.server
            .handle_data(c, get_req("/subscribe?room=r").as_bytes(), bare.now)
            .unwrap();
        held.push(c);
    }
    // A request whose head is complete and whose body is not, and one only begun.
    let body_pending = bare.server.handle_accept(peer, bare.now);
    bare.server
        .handle_data(
            body_pending,
            b"POST /publish HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nhal",
            bare.now,
        )
        .unwrap();
    let head_pending = bare.server.handle_accept(peer, bare.now);
    bare.server
        .handle_data(head_pending, b"GET /heal", bare.now)
        .unwrap();
    drop(bare.drain(true, false));
    assert_eq!(bare.server.held_count(), 1_000);
    assert!(!bare.server.is_drained());

    bare.server.handle_shutdown(bare.now);
    // Answers queued but not written yet: not drained.
    let sent = bare.drain(false, false);
    assert!(!bare.server.is_drained());
    let answer = |c: ConnId| {
        sent.iter()
            .find(|(id, _)| *id == c)
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
    };
    let a = answer(body_pending).expect("the request with a complete head is answered");
    assert!(
        a.starts_with("HTTP/1.1 503 ") && a.contains("Retry-After: "),
        "{a}"
    );
    assert_eq!(answer(head_pending), None, "a request only begun is closed");
    assert!(answer(held[0]).unwrap().starts_with("HTTP/1.1 503 "));
    for (c, d) in &sent {
        bare.server.handle_flushed(*c, d.len(), bare.now).unwrap();
    }
    // Every answer written; the peers keep their connections open: drained all the same.
    assert_eq!(bare.server.connection_count(), 1_002);
    assert!(bare.server.is_drained());
}
