//! Unit tests of the connection task.

use super::*;
use parlor_core::Config;
use std::io::{Read, Write};
use std::net::Shutdown;

fn shared(now: Instant) -> Rc<Shared> {
    Rc::new(Shared {
        core: RefCell::new(Core::new(
            Server::new(Config::default(), 1_763_764_000_000, now),
            None,
        )),
    })
}

/// What a held poll costs beside the socket's registration and the core's slot: its task
/// (this future plus the executor's header) and its mailbox in the shared table. Keep them
/// small.
#[test]
fn a_waiting_connection_is_small() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let task = Connection::new(
        ConnId(0),
        Async::new(stream).unwrap(),
        shared(Instant::now()),
    );
    assert!(
        std::mem::size_of_val(&task) <= 64,
        "{}",
        std::mem::size_of_val(&task)
    );
    assert!(std::mem::size_of::<Option<Mailbox>>() <= 64);
}

/// A connection task hands what it reads to the core itself and writes the core's answer;
/// when the peer closes, the task tells the core and ends, and the slot is free.
#[test]
fn a_connection_task_drives_the_core_directly() {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let shared = shared(Instant::now());
        let id = shared.core.borrow_mut().accept(peer, Instant::now());
        let task = executor.spawn(Connection::new(id, stream, shared.clone()));
        task.await;
        let core = shared.core.borrow();
        assert_eq!(core.server.connection_count(), 0);
        assert!(core.mailboxes[id.0].is_none());
        drop(core);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }));
}
