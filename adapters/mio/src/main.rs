//! `parlor-mio`: the Parlor chat server on a single-threaded mio event loop.
//! Everything is in the library ([`parlor_mio::main_entry`]), so tests can run the same loop.

fn main() {
    std::process::exit(parlor_mio::main_entry(
        "parlor-mio",
        std::env::args().skip(1),
    ));
}
