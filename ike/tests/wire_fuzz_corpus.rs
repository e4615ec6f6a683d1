//! Replays the fuzz corpus and seeded mutations of it through the fuzz entry point, so
//! the fuzzing properties are checked by every plain `cargo test`.

mod wire_common;

use iiptran_ike::wire::fuzz::ike_message;
use std::fs;
use std::path::PathBuf;

/// Set to rewrite the seed files in the corpus from `wire_common::seeds`.
const WRITE_CORPUS_VAR: &str = "IIPTRAN_WRITE_CORPUS";
const MUTATIONS: usize = 50_000;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ike_message")
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| fs::read(f).unwrap()).collect()
}

#[test]
fn corpus_holds_the_seed_messages() {
    for (name, datagram) in wire_common::seeds() {
        let path = corpus_dir().join(format!("seed-{name}"));
        if std::env::var_os(WRITE_CORPUS_VAR).is_some() {
            fs::write(&path, &datagram).unwrap();
        }
        let stored = fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with {WRITE_CORPUS_VAR}=1)", path.display()));
        assert_eq!(stored, datagram, "{} is stale", path.display());
    }
}

/// xorshift64*: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const LENGTH_FIELD: std::ops::Range<usize> = 24..28;

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(3) {
        match rng.below(5) {
            0 => {
                let i = rng.below(data.len());
                if let Some(b) = data.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => data.truncate(rng.below(data.len() + 1)),
            2 => {
                let other = &corpus[rng.below(corpus.len())];
                data.truncate(rng.below(data.len() + 1));
                data.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
            3 => {
                // Nudge a 16-bit field, most likely a payload or substructure length.
                let i = rng.below(data.len().saturating_sub(1));
                if let Some(field) = data.get_mut(i..i + 2) {
                    let v = u16::from_be_bytes([field[0], field[1]]);
                    let delta = rng.below(9) as i32 - 4;
                    let v = (i32::from(v) + delta).clamp(0, 0xffff) as u16;
                    field.copy_from_slice(&v.to_be_bytes());
                }
            }
            _ => {
                let i = rng.below(data.len());
                if let Some(b) = data.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    // Keep the header length consistent most of the time so the payload parsers run.
    if rng.below(4) != 0 {
        let len = u32::try_from(data.len()).unwrap().to_be_bytes();
        if let Some(field) = data.get_mut(LENGTH_FIELD) {
            field.copy_from_slice(&len);
        }
    }
    data
}

#[test]
fn corpus_and_mutations_keep_the_wire_properties() {
    let corpus = corpus();
    assert!(corpus.len() >= wire_common::seeds().len());
    for data in &corpus {
        ike_message(data);
    }
    let mut rng = Rng(0x1d2e_3f40_5162_7384);
    let mut parsed = 0;
    for _ in 0..MUTATIONS {
        let data = mutate(&mut rng, &corpus);
        ike_message(&data);
        parsed += usize::from(iiptran_ike::wire::Message::parse(&data).is_ok());
    }
    // The mutations must not all be rejected at the header, or they test nothing.
    assert!(parsed > MUTATIONS / 20, "only {parsed} mutations parsed");
}
