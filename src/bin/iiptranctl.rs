//! `iiptranctl`: the operator's tool for a running `iiptrand`.

use clap::Parser;

/// Inspect and control a running iiptrand over its control socket.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
