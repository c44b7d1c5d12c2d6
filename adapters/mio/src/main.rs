//! `parlor-mio`: the Parlor chat server on a single-threaded mio event loop.
//! The program is [`parlor_os::main_entry`] around [`parlor_mio::EventLoop`], so tests can run
//! the same loop in-process.

fn main() {
    std::process::exit(parlor_os::main_entry::<parlor_mio::EventLoop>(
        "parlor-mio",
        std::env::args().skip(1),
    ));
}
