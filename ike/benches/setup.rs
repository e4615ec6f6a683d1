//! Complete IKE SA + first child SA setups between two engines in one process
//! (x25519, ChaCha20-Poly1305, Ed25519 certificates), over the simulated network
//! without faults. Prints setups per second.

#[path = "../tests/sim/mod.rs"]
mod sim;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iiptran_ike::config::{Config, EspSuite, IkeSuite};
use std::time::{Duration, Instant};

fn network() -> sim::Net {
    let config = Config {
        ike_suites: vec![IkeSuite::CHACHA_X25519],
        esp_suites: vec![EspSuite::CHACHA],
        ..Config::default()
    };
    let mut net = sim::Net::new(1);
    net.add("alice.vn.example", "192.0.2.1", config.clone());
    net.add("bob.vn.example", "192.0.2.2", config);
    net.pair_certs(0, 1, &rcgen::PKCS_ED25519);
    net
}

fn one_setup(net: &mut sim::Net) {
    net.initiate(0, 1);
    assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
}

fn setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike_setup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ed25519_x25519_chacha20poly1305", |b| {
        b.iter_batched(
            network,
            |mut net| one_setup(&mut net),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    let rounds = 300;
    let mut nets: Vec<sim::Net> = (0..rounds).map(|_| network()).collect();
    let started = Instant::now();
    for net in &mut nets {
        one_setup(net);
    }
    let per_second = f64::from(rounds) / started.elapsed().as_secs_f64();
    println!("IKE SA + first child SA setups per second (Ed25519 certificates): {per_second:.0}");
}

criterion_group!(benches, setup);
criterion_main!(benches);
