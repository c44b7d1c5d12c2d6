//! Unit tests of the connection task.

use super::*;
use parlor_core::Config;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

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
    let task = Connection::new(ConnId(0), shared(Instant::now()));
    assert!(
        std::mem::size_of_val(&task) <= 64,
        "{}",
        std::mem::size_of_val(&task)
    );
    // The mailbox keeps the socket (the task does not).
    let mailbox = Mailbox::new(Async::new(stream).unwrap());
    assert!(
        std::mem::size_of_val(&Some(mailbox)) <= 80,
        "{}",
        std::mem::size_of::<Option<Mailbox>>()
    );
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
        let id = shared
            .core
            .borrow_mut()
            .accept(stream, peer, Instant::now());
        let task = executor.spawn(Connection::new(id, shared.clone()));
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

/// A held poll's answer is written by whoever hands the core the publish, at once: its task
/// stays asleep (its waker is still in the mailbox, nothing is queued) and the client already
/// has the answer.
#[test]
fn a_held_polls_answer_is_written_without_waking_its_task() {
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let shared = shared(Instant::now());

        let mut subscriber = TcpStream::connect(addr).unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let sub = shared
            .core
            .borrow_mut()
            .accept(stream, peer, Instant::now());
        let task = executor.spawn(Connection::new(sub, shared.clone()));
        subscriber
            .write_all(b"GET /subscribe?room=t HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        // The task reads the poll, hands it to the core and goes to sleep.
        let asleep = |shared: &Shared| shared.core.borrow().inputs == 1 && is_idle(shared, sub);
        for _ in 0..5_000 {
            if asleep(&shared) {
                break;
            }
            Timer::after(Duration::from_millis(1)).await;
        }
        assert!(asleep(&shared), "the poll is not held");

        // The publisher's own task is not even running: this test hands the core its request.
        let _publisher = TcpStream::connect(addr).unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        publish(&shared, stream, peer);
        assert!(
            is_idle(&shared, sub),
            "the subscriber's task was woken to write"
        );

        subscriber
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0; 1024];
        while !answer.ends_with(b"hello") {
            let n = subscriber.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");

        drop(subscriber);
        task.await;
    }));
}

/// Accepts `stream` as a publisher and hands the core its `POST /publish?room=t` of `hello`.
fn publish(shared: &Shared, stream: Async<TcpStream>, peer: SocketAddr) {
    let mut core = shared.core.borrow_mut();
    let id = core.accept(stream, peer, Instant::now());
    core.handle_data(
        id,
        b"POST /publish?room=t HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello",
    );
}

/// Whether the task of `id` waits with nothing queued for it.
fn is_idle(shared: &Shared, id: ConnId) -> bool {
    shared.core.borrow().mailboxes[id.0]
        .as_ref()
        .is_some_and(Mailbox::is_idle)
}
