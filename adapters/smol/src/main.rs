//! `parlor-smol`: the Parlor chat server on smol tasks, one thread.
//! The program is [`parlor_os::main_entry`] around [`parlor_smol::Bound`], so tests can run the
//! same server in-process.

fn main() {
    std::process::exit(parlor_os::main_entry::<parlor_smol::Bound>(
        "parlor-smol",
        std::env::args().skip(1),
    ));
}
