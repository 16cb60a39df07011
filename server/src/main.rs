//! `gridsync serve [--data-dir DIR] [--listen ADDR]`

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(gridsync_server::cli::main(&args));
}
