//! Writes the fuzz fixture (`fuzz/fixture.bin`) and the seed corpus
//! (`fuzz/seeds/<target>/`): `cargo run -p gridsync-tests --bin fuzz-seeds`.
//! Rewriting the fixture makes the committed corpus reach less deep (its
//! inputs extend the old fixture's records), so do it only with a reason.

fn main() {
    let dir = gridsync_tests::fuzz::fuzz_dir();
    match gridsync_tests::fuzz::write_seeds(&dir.join("fixture.bin"), &dir.join("seeds")) {
        Ok(n) => println!("wrote fuzz/fixture.bin and {n} seed inputs under fuzz/seeds/"),
        Err(e) => {
            eprintln!("fuzz-seeds: {e}");
            std::process::exit(1);
        }
    }
}
