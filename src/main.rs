//! `gps-agent`: a thin binary; everything lives in the library.

fn main() {
    std::process::exit(gps_agent::cli::main());
}
