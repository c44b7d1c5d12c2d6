#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| parlor_fuzz_harness::machine(
    data,
    std::time::Instant::now()
));
