#![no_main]

libfuzzer_sys::fuzz_target!(
    init: gridsync_tests::fuzz::contain_library_panics(),
    |data: &[u8]| gridsync_tests::fuzz::foreign_changes(data)
);
