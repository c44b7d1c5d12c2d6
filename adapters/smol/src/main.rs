//! `parlor-smol`: the Parlor chat server on smol tasks, one thread.
//! Everything is in the library ([`parlor_smol::main_entry`]), so tests can run the same server.

fn main() {
    std::process::exit(parlor_smol::main_entry(
        "parlor-smol",
        std::env::args().skip(1),
    ));
}
