//! The real `parlor-smol` binary: its command line, start-up line, signals, descriptors and
//! memory, by the scenarios both adapters share (`parlor_os::testkit::binary`).

parlor_os::binary_tests!(env!("CARGO_BIN_EXE_parlor-smol"), "parlor-smol");
