//! Complete IKE SA + first child SA setups between two engines in one process
//! (x25519, ChaCha20-Poly1305), over the simulated network without faults.

#[path = "../tests/sim/mod.rs"]
mod sim;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iiptran_ike::config::Config;
use std::time::{Duration, Instant};

fn setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike_setup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("psk_x25519_chacha20poly1305", |b| {
        b.iter(|| {
            let mut net = sim::Net::new(1);
            net.add("alice.example", "192.0.2.1", Config::default());
            net.add("bob.example", "192.0.2.2", Config::default());
            net.pair_psk(0, 1);
            net.initiate(0, 1);
            assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
        })
    });
    group.finish();

    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut net = sim::Net::new(1);
        net.add("alice.example", "192.0.2.1", Config::default());
        net.add("bob.example", "192.0.2.2", Config::default());
        net.pair_psk(0, 1);
        net.initiate(0, 1);
        assert!(net.run_until(Duration::from_secs(1), |n| n.paired(0, 1)));
    }
    let per_second = f64::from(rounds) / started.elapsed().as_secs_f64();
    println!("IKE SA + child SA setups/second (PSK): {per_second:.0}");
}

criterion_group!(benches, setup);
criterion_main!(benches);
