//! Unit tests of the connection task.

use super::*;
use bytes::Bytes;
use parlor_core::Output;
use std::io::Write;
use std::net::Shutdown;

/// What a held poll costs beside the socket's registration and the core's slot: its task
/// (this future plus the executor's header) and its mailbox. Keep them small.
#[test]
fn a_waiting_connection_is_small() {
    let (events, _inbox) = smol::channel::bounded(1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let task = Connection::new(
        ConnId(0),
        Async::new(stream).unwrap(),
        Rc::default(),
        Rc::default(),
        events,
    );
    assert!(
        std::mem::size_of_val(&task) <= 96,
        "{}",
        std::mem::size_of_val(&task)
    );
    assert!(std::mem::size_of::<RefCell<Mailbox>>() <= 64);
}

/// With the event channel full, a connection waits with its event in hand (none is lost or
/// reordered), and it still closes when told.
#[test]
fn a_connection_waits_for_room_in_a_full_channel() {
    let (events, inbox) = smol::channel::bounded(1);
    events.try_send(Event::Eof(ConnId(99))).unwrap(); // full
    let executor = LocalExecutor::new();
    smol::block_on(executor.run(async {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();

        let mailbox: Rc<RefCell<Mailbox>> = Rc::default();
        let flushed: Rc<FlushLog> = Rc::default();
        let id = ConnId(7);
        let task = executor.spawn(Connection::new(
            id,
            stream,
            mailbox.clone(),
            flushed.clone(),
            events,
        ));
        // Let the task read and find the channel full.
        for _ in 0..10 {
            smol::future::yield_now().await;
        }
        assert!(matches!(inbox.recv().await, Ok(Event::Eof(ConnId(99)))));
        match inbox.recv().await {
            Ok(Event::Data(got, data)) => assert_eq!((got, &data[..]), (id, &b"hello"[..])),
            other => panic!("expected the data, got {other:?}"),
        }
        // The owner hands the data to the core; only then does the task read on.
        mailbox.borrow_mut().data_taken();
        assert!(matches!(inbox.recv().await, Ok(Event::Eof(got)) if got == id));

        // The answer is written and logged, then the connection closes.
        let data = Bytes::from_static(b"bye");
        mailbox
            .borrow_mut()
            .deliver(Output::Send { conn: id, data });
        mailbox.borrow_mut().deliver(Output::Close { conn: id });
        assert!(matches!(inbox.recv().await, Ok(Event::Closed(got)) if got == id));
        task.await;
        assert_eq!(flushed.borrow().as_slice(), &[(id, 3)]);
        let mut answer = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut answer).unwrap();
        assert_eq!(answer, b"bye");
    }));
}
