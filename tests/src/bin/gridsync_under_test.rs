//! The real `gridsync` command line, built inside the tests package so
//! that tests can run it as a process and kill it.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(gridsync_server::cli::main(&args));
}
