#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gridsync_tests::fuzz::sync_request(data));
