//! The load generator completes 20 setups against a real iiptrand in network namespaces,
//! so that `bench/run` cannot rot unnoticed. Needs root and strongSwan's `pki` (installed
//! by tests/interop/setup), and iiptrand/iiptranctl built in the same target directory
//! (`cargo build -p iiptran --bins`, which `cargo test --workspace` does) or in the
//! directory `IIPTRAN_BIN_DIR` names.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use iiptran_bench::iiptrand::Binaries;
use iiptran_bench::setup_rate::{self, Responder, Setup};
use iiptran_testkit::{WorkDir, have_root};

const NODES: u32 = 20;

fn binaries() -> Binaries {
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"));
    let dir = std::env::var_os("IIPTRAN_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| loadgen.parent().map(PathBuf::from))
        .expect("a directory for the binaries");
    let found = Binaries {
        iiptrand: dir.join("iiptrand"),
        iiptranctl: dir.join("iiptranctl"),
    };
    for bin in [&found.iiptrand, &found.iiptranctl] {
        assert!(
            bin.exists(),
            "{} is missing: build it first (cargo build -p iiptran --bins) or set IIPTRAN_BIN_DIR",
            bin.display()
        );
    }
    found
}

fn twenty_setups(concurrency: u32) {
    let work = WorkDir::temp("bench-smoke").expect("scratch directory");
    let (ca, cert) = setup_rate::credentials(&work.path).expect("credentials from pki");
    let setup = Setup {
        binaries: binaries(),
        loadgen: PathBuf::from(env!("CARGO_BIN_EXE_loadgen")),
        concurrency,
        prefix: format!("ibt{concurrency}{}", std::process::id() % 10_000),
    };
    let started = Instant::now();
    let run = setup_rate::run_once(&setup, &work.path, &ca, &cert, Responder::Iiptrand, NODES)
        .expect("20 setups against iiptrand");
    assert_eq!(run.loadgen.up, NODES);
    assert_eq!(run.loadgen.failed, 0);
    assert!(run.setups_per_sec > 0.0 && run.setups_per_sec.is_finite());
    assert!(run.responder_cpu_ms_per_setup >= 0.0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn loadgen_sets_up_twenty_nodes_against_iiptrand() {
    if have_root("loadgen_sets_up_twenty_nodes_against_iiptrand") {
        twenty_setups(8);
    }
}

/// One setup in flight: each ends before the next starts, so nothing but the load
/// generator itself starts the next one.
#[test]
fn loadgen_sets_up_nodes_one_at_a_time() {
    if have_root("loadgen_sets_up_nodes_one_at_a_time") {
        twenty_setups(1);
    }
}
