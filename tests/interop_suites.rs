//! iiptrand against strongSwan's charon with each IKE suite (ChaCha20-Poly1305/X25519,
//! AES-GCM-256/P-256, AES-CBC-256/HMAC-SHA2-256/X25519) and each ESP suite
//! (ChaCha20-Poly1305, AES-GCM-256), with iiptran as initiator and as responder. Both
//! sides offer only the suite under test; charon must list exactly it. The combinations run
//! in parallel, each in its own namespaces; a failure names its combination.
//! Needs root and `tests/interop/setup`.

mod support;

use std::collections::BTreeMap;

use iiptran_testkit::strongswan::Installation;
use support::OrPanic;
use support::peering::{Keys, NEIGHBOR, Peering, Plan, child};

/// An IKE proposal and what charon lists for it: encr-alg, encr-keysize, integ-alg,
/// prf-alg, dh-group (absent fields are empty).
const IKE: [(&str, [&str; 5]); 3] = [
    (
        "chacha20poly1305-prfsha256-x25519",
        [
            "CHACHA20_POLY1305",
            "",
            "",
            "PRF_HMAC_SHA2_256",
            "CURVE_25519",
        ],
    ),
    (
        "aes256gcm16-prfsha384-ecp256",
        ["AES_GCM_16", "256", "", "PRF_HMAC_SHA2_384", "ECP_256"],
    ),
    (
        "aes256-sha256-x25519",
        [
            "AES_CBC",
            "256",
            "HMAC_SHA2_256_128",
            "PRF_HMAC_SHA2_256",
            "CURVE_25519",
        ],
    ),
];

/// An ESP proposal and charon's encr-alg and encr-keysize for it.
const ESP: [(&str, [&str; 2]); 2] = [
    ("chacha20poly1305", ["CHACHA20_POLY1305", ""]),
    ("aes256gcm16", ["AES_GCM_16", "256"]),
];

fn fields(map: &BTreeMap<String, String>, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .map(|k| map.get(*k).cloned().unwrap_or_default())
        .collect()
}

fn one(install: &Installation, ike: (&str, [&str; 5]), esp: (&str, [&str; 2]), ours: bool) {
    let plan = Plan::new(Keys::Psk, ours).suite(ike.0, esp.0);
    let peering = Peering::start(install, &plan).or_panic();
    let sa = peering.establish(&plan).or_panic();
    let listed = fields(
        &sa.fields,
        &[
            "encr-alg",
            "encr-keysize",
            "integ-alg",
            "prf-alg",
            "dh-group",
        ],
    );
    assert_eq!(listed, ike.1, "IKE suite in {sa:#?}");
    let child = child(&sa);
    assert_eq!(child.mode, "TRANSPORT");
    assert_eq!(
        fields(&child.fields, &["encr-alg", "encr-keysize"]),
        esp.1,
        "ESP suite in {sa:#?}"
    );
    peering.daemon.established(NEIGHBOR).or_panic().unwrap();
}

/// Every combination at once; the failure lists those that failed.
fn matrix(iiptran_initiates: bool) {
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let role = if iiptran_initiates {
        "iiptran initiates"
    } else {
        "charon initiates"
    };
    let failed: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = IKE
            .iter()
            .flat_map(|ike| ESP.iter().map(move |esp| (*ike, *esp)))
            .map(|(ike, esp)| {
                let name = format!("IKE {} ESP {} ({role})", ike.0, esp.0);
                let install = &install;
                let thread = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || one(install, ike, esp, iiptran_initiates))
                    .unwrap();
                (name, thread)
            })
            .collect();
        runs.into_iter()
            .filter_map(|(name, thread)| thread.join().is_err().then_some(name))
            .collect()
    });
    assert!(failed.is_empty(), "failed combinations: {failed:#?}");
}

#[test]
fn suites_iiptran_initiates() {
    if !iiptran_testkit::have_root("suites_iiptran_initiates") {
        return;
    }
    matrix(true);
}

#[test]
fn suites_charon_initiates() {
    if !iiptran_testkit::have_root("suites_charon_initiates") {
        return;
    }
    matrix(false);
}
