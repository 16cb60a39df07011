#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gridsync_tests::fuzz::foreign_changes(data));
