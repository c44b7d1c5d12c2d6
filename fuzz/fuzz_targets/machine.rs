#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor_core::fuzzing::machine(
    data,
    std::time::Instant::now()
));
