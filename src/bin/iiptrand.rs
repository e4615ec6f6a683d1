//! `iiptrand`: the iiptran IKEv2 key-management daemon.

use clap::Parser;

/// IKEv2 key-management daemon for RFC 3884 (IIPtran) secure virtual networks.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _args = Args::parse();
}
