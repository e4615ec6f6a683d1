//! Two nodes enroll with `iiptrand enroll` against the VN CA served by a third daemon's
//! `[enroll.server]`, and come up with the issued certificates. One test revokes a node
//! and shows that its next IKE SA is refused once the CRL has reached its neighbor; the
//! other gives certificates a lifetime of seconds and shows the daemons renewing them
//! (`[enroll.client]`) while the adjacency stays up, then a new IKE SA succeeding with
//! the renewed certificates after the first ones have expired, and failed renewals being
//! retried and reported once the service is gone. Further: a daemon that
//! hosts the CA refuses a revoked peer by the CA's own CRL and another reads a CRL file
//! as it changes; the enrollment service moves and stops as reloads say. Needs root.

mod enroll_common;
mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use iiptran::control::protocol::{CertReport, LinkState};
use iiptran_testkit::iiptrand::{Credentials, Neighbor, NodeConfig};
use iiptran_testkit::netns::{Netns, veth};
use iiptran_testkit::wait::wait_until;
use iiptran_testkit::{WorkDir, have_root};
use support::OrPanic;
use support::daemon::{Daemon, enroll};

const A: &str = "198.51.100.1";
const B: &str = "198.51.100.2";
/// The CA daemon's endpoint, an address on the loopback of A's namespace.
const CA: &str = "198.51.100.3";
const SERVER: &str = "https://198.51.100.3:8443";
const UP: Duration = Duration::from_secs(30);

/// The CA daemon and the two enrolled nodes, each in their place.
struct Vn {
    a: Daemon,
    b: Daemon,
    ca: enroll_common::TestCa,
    ca_daemon: Daemon,
    // Dropped last: the daemons run inside the namespaces and write into the directory.
    _a_ns: Netns,
    _b_ns: Netns,
    _dir: WorkDir,
}

impl Vn {
    /// Starts the CA daemon issuing certificates of `cert_lifetime`, enrolls a and b with
    /// it and starts them with `[enroll.client]` and a CRL refresh every second.
    fn start(cert_lifetime: &str) -> Result<Self> {
        let dir = WorkDir::temp("daemon-enroll")?;
        let ca = enroll_common::TestCa::new();
        let a_ns = Netns::new("dea")?;
        let b_ns = Netns::new("deb")?;
        veth(&a_ns, A.parse()?, &b_ns, B.parse()?, 24)?;
        a_ns.ip(&["addr", "add", &format!("{CA}/32"), "dev", "lo"])?;

        let mut ca_config = NodeConfig::new("ca", CA, Credentials::Psk(String::new()));
        ca_config.sections = format!(
            "[enroll.server]\nlisten = \"{CA}:8443\"\nca_dir = \"{}\"\ncert_lifetime = \"{cert_lifetime}\"\n",
            ca.ca_dir().display()
        );
        let ca_daemon = Daemon::start(&a_ns, dir.path(), &ca_config, &[])?;
        // The daemon answers once its enrollment service is bound.
        wait_until("the CA daemon", UP, Duration::from_millis(100), || {
            Ok(ca_daemon.status()?.is_some())
        })?;

        let enrolled = |ns: &Netns, name: &str, endpoint: &str| -> Result<PathBuf> {
            let identity = format!("{name}.vn.example");
            let token = ca.token(&identity, endpoint, "1h");
            let creds = dir.join(name);
            enroll(Some(ns), SERVER, &token, &ca.fingerprint, &identity, &creds)?;
            Ok(creds)
        };
        let node = |name: &str, endpoint: &str, creds: PathBuf, peer: Neighbor| {
            let mut config = NodeConfig::new(name, endpoint, Credentials::Enrolled(creds));
            config.auth = "crl_refresh = \"1s\"\n".to_owned();
            config.sections = format!("[enroll.client]\nserver = \"{SERVER}\"\n");
            config.neighbor(peer)
        };
        let a_config = node(
            "a",
            A,
            enrolled(&a_ns, "a", A)?,
            Neighbor::new("b", B, "10.255.0.0/31"),
        );
        let b_config = node(
            "b",
            B,
            enrolled(&b_ns, "b", B)?,
            Neighbor::new("a", A, "10.255.0.1/31"),
        );
        let a = Daemon::start(&a_ns, dir.path(), &a_config, &[])?;
        let b = Daemon::start(&b_ns, dir.path(), &b_config, &[])?;
        Ok(Self {
            a,
            b,
            ca,
            ca_daemon,
            _a_ns: a_ns,
            _b_ns: b_ns,
            _dir: dir,
        })
    }
}

/// The node's own certificate: the first one `list-certs` reports.
fn own_cert(daemon: &Daemon) -> Result<CertReport> {
    match daemon.certs()?.into_iter().next() {
        Some(cert) => Ok(cert),
        None => bail!("{} lists no certificate", daemon.name),
    }
}

/// The serials revoked by the CRL `daemon` checks the CA's certificates against.
fn revoked_serials(daemon: &Daemon) -> Result<Option<Vec<String>>> {
    Ok(daemon
        .certs()?
        .into_iter()
        .find_map(|c| c.crl)
        .map(|crl| crl.revoked))
}

fn ctl_ok(daemon: &Daemon, args: &[&str]) {
    let out = daemon.ctl(args).or_panic();
    assert!(
        out.status.success(),
        "iiptranctl {args:?} on {}: {}",
        daemon.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_revoked_node_is_refused_once_the_crl_reaches_its_neighbor() {
    if !have_root("a_revoked_node_is_refused_once_the_crl_reaches_its_neighbor") {
        return;
    }
    let vn = Vn::start("1h").or_panic();
    vn.a.wait_established("b", UP).or_panic();
    vn.b.wait_established("a", UP).or_panic();
    let before = wait_until(
        "a to have the CA's CRL",
        UP,
        Duration::from_millis(200),
        || revoked_serials(&vn.a),
    )
    .or_panic();
    assert!(
        before.is_empty(),
        "revoked before any revocation: {before:?}"
    );

    let serial = own_cert(&vn.b).or_panic().serial;
    // The CA daemon serves the CA meanwhile: the database is shared with iiptranctl.
    let out = vn.ca.ctl(&["revoke", &serial]);
    assert!(out.contains(&serial), "{out}");
    wait_until(
        "the CRL with b's serial to reach a",
        UP,
        Duration::from_millis(200),
        || Ok(revoked_serials(&vn.a)?.is_some_and(|r| r.contains(&serial))),
    )
    .or_panic();
    assert!(
        vn.a.established("b").or_panic().is_some(),
        "revocation must not tear down the established SAs"
    );

    // b starts a new IKE SA.
    ctl_ok(&vn.b, &["terminate", "a"]);
    ctl_ok(&vn.b, &["initiate", "a"]);
    let refused = wait_until(
        "a to refuse b's revoked certificate",
        UP,
        Duration::from_millis(200),
        || {
            Ok(vn.a.neighbor("b")?.filter(|n| {
                n.last_error.as_ref().is_some_and(|e| {
                    e.message.contains("AUTHENTICATION_FAILED") && e.message.contains("Revoked")
                })
            }))
        },
    )
    .or_panic();
    assert_ne!(refused.adjacency, "established");
    assert_eq!(refused.link_state, LinkState::Down);
    wait_until(
        "b to learn that it was refused",
        UP,
        Duration::from_millis(200),
        || {
            Ok(vn.b.neighbor("a")?.is_some_and(|n| {
                n.last_error
                    .is_some_and(|e| e.message.contains("AUTHENTICATION_FAILED"))
            }))
        },
    )
    .or_panic();
    // Both sides keep retrying; a never accepts any attempt. (b, answering a's
    // attempts, installs its side for the moment until a's AUTHENTICATION_FAILED comes.)
    let watch = Duration::from_secs(8);
    let came_up = wait_until(
        "the refused adjacency to come up",
        watch,
        Duration::from_millis(250),
        || {
            Ok(vn
                .a
                .neighbor("b")?
                .is_some_and(|n| n.adjacency == "established"))
        },
    );
    assert!(
        came_up.is_err(),
        "the revoked node's adjacency came up again"
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[test]
fn certificates_renewed_in_seconds_keep_the_adjacency_up() {
    if !have_root("certificates_renewed_in_seconds_keep_the_adjacency_up") {
        return;
    }
    let mut vn = Vn::start("24s").or_panic();
    let up = vn.a.wait_established("b", UP).or_panic();
    vn.b.wait_established("a", UP).or_panic();
    let first_a = own_cert(&vn.a).or_panic();
    let first_b = own_cert(&vn.b).or_panic();
    let renewal = first_a.renewal.as_ref().expect("a reports its renewal");
    assert_eq!(renewal.server, SERVER);
    assert!(
        renewal
            .next_attempt
            .is_some_and(|t| t > first_a.not_before && t < first_a.not_after),
        "renewal not scheduled within the lifetime: {renewal:?}"
    );

    // The new certificate, once the daemon has also recorded its renewal.
    let renewed = |daemon: &Daemon, first: &CertReport| -> Result<Option<CertReport>> {
        Ok(Some(own_cert(daemon)?).filter(|c| {
            c.serial != first.serial && c.renewal.as_ref().is_some_and(|r| r.last_renewed.is_some())
        }))
    };
    let lifetime = Duration::from_secs(first_a.not_after - first_a.not_before);
    let new_a = wait_until("a's renewal", lifetime, Duration::from_millis(250), || {
        renewed(&vn.a, &first_a)
    })
    .or_panic();
    wait_until("b's renewal", lifetime, Duration::from_millis(250), || {
        renewed(&vn.b, &first_b)
    })
    .or_panic();
    let report = new_a.renewal.expect("a reports its renewal");
    assert_eq!(report.failures, 0, "{report:?}");
    assert!(new_a.not_after > first_a.not_after);
    let still =
        vn.a.established("b")
            .or_panic()
            .expect("still up after renewal");
    assert_eq!(
        still.last_established, up.last_established,
        "the adjacency was re-established across the renewal"
    );

    // Once the first certificates have expired, a new IKE SA can only use renewed ones.
    let expired = first_a.not_after.max(first_b.not_after);
    wait_until(
        "the first certificates to expire",
        lifetime,
        Duration::from_millis(250),
        || Ok(unix_now() > expired),
    )
    .or_panic();
    assert!(
        vn.a.established("b").or_panic().is_some(),
        "SAs outlive certificates"
    );
    ctl_ok(&vn.a, &["terminate", "b"]);
    ctl_ok(&vn.a, &["initiate", "b"]);
    let again = vn.a.wait_established("b", UP).or_panic();
    assert!(again.last_established > up.last_established);
    vn.b.wait_established("a", UP).or_panic();

    // Without the enrollment service renewals fail, are retried and are shown.
    vn.ca_daemon.process.stop().or_panic();
    let failing = wait_until(
        "a to report a failed renewal",
        lifetime,
        Duration::from_millis(250),
        || {
            Ok(own_cert(&vn.a)?
                .renewal
                .filter(|r| r.failures >= 1 && r.last_error.is_some()))
        },
    )
    .or_panic();
    assert!(
        failing.next_attempt.is_some_and(|t| t <= unix_now() + 3),
        "retried soon: {failing:?}"
    );
    assert!(vn.a.established("b").or_panic().is_some());
}

#[test]
fn the_enrollment_service_follows_reloads() {
    if !have_root("the_enrollment_service_follows_reloads") {
        return;
    }
    let dir = WorkDir::temp("daemon-enroll-reload").or_panic();
    let ca = enroll_common::TestCa::new();
    let ns = Netns::new("der").or_panic();
    ns.ip(&["addr", "add", &format!("{CA}/32"), "dev", "lo"])
        .or_panic();
    let with_server = |port: u16| {
        let mut config = NodeConfig::new("ca", CA, Credentials::Psk(String::new()));
        config.sections = format!(
            "[enroll.server]\nlisten = \"{CA}:{port}\"\nca_dir = \"{}\"\n",
            ca.ca_dir().display()
        );
        config
    };
    let mut daemon = Daemon::start(&ns, dir.path(), &with_server(8443), &[]).or_panic();
    wait_until("the CA daemon", UP, Duration::from_millis(100), || {
        Ok(daemon.status()?.is_some())
    })
    .or_panic();
    let n = std::cell::Cell::new(0);
    let try_enroll = |port: u16| {
        n.set(n.get() + 1);
        let identity = format!("n{}.vn.example", n.get());
        let token = ca.token(&identity, "192.0.2.7", "1h");
        let server = format!("https://{CA}:{port}");
        let creds = dir.join(&format!("n{}", n.get()));
        enroll(
            Some(&ns),
            &server,
            &token,
            &ca.fingerprint,
            &identity,
            &creds,
        )
    };
    let reload = |daemon: &mut Daemon, config: &NodeConfig| {
        daemon.rewrite(config).or_panic();
        ctl_ok(daemon, &["reload"]);
    };
    try_enroll(8443).or_panic();

    reload(&mut daemon, &with_server(8444));
    try_enroll(8444).or_panic();
    assert!(try_enroll(8443).is_err(), "the old port still serves");

    reload(
        &mut daemon,
        &NodeConfig::new("ca", CA, Credentials::Psk(String::new())),
    );
    assert!(
        try_enroll(8444).is_err(),
        "the service outlived its section"
    );
}

/// Waits until `daemon` uses a CRL from `source` that revokes `serial`.
fn wait_revoked_by(daemon: &Daemon, source: &str, serial: &str) {
    let what = format!(
        "{} to have a CRL from {source} revoking {serial}",
        daemon.name
    );
    wait_until(&what, UP, Duration::from_millis(200), || {
        let crl = daemon.certs()?.into_iter().find_map(|c| c.crl);
        Ok(crl.is_some_and(|crl| crl.source == source && crl.revoked.iter().any(|s| s == serial)))
    })
    .or_panic();
}

#[test]
fn the_ca_host_and_a_crl_file_both_revoke() {
    if !have_root("the_ca_host_and_a_crl_file_both_revoke") {
        return;
    }
    let dir = WorkDir::temp("daemon-enroll-ca-host").or_panic();
    let ca = enroll_common::TestCa::new();
    // Both nodes enroll with a standalone service first: a hosts the CA afterwards.
    let standalone = ca.serve(&[]);
    let enrolled = |name: &str, endpoint: &str| {
        let identity = format!("{name}.vn.example");
        let token = ca.token(&identity, endpoint, "1h");
        let creds = dir.join(name);
        let server = standalone.url("");
        enroll(None, &server, &token, &ca.fingerprint, &identity, &creds).or_panic();
        creds
    };
    let (a_creds, b_creds) = (enrolled("a", A), enrolled("b", B));
    drop(standalone);
    let crl_file = dir.join("vn.crl");
    ca.ctl(&["crl", "--out", enroll_common::path_str(&crl_file)]);

    let a_ns = Netns::new("dha").or_panic();
    let b_ns = Netns::new("dhb").or_panic();
    veth(&a_ns, A.parse().unwrap(), &b_ns, B.parse().unwrap(), 24).or_panic();
    let mut a_config = NodeConfig::new("a", A, Credentials::Enrolled(a_creds))
        .neighbor(Neighbor::new("b", B, "10.255.0.0/31"));
    a_config.auth = "crl_refresh = \"1s\"\n".to_owned();
    a_config.sections = format!(
        "[enroll.server]\nlisten = \"{A}:8443\"\nca_dir = \"{}\"\n",
        ca.ca_dir().display()
    );
    let mut b_config = NodeConfig::new("b", B, Credentials::Enrolled(b_creds))
        .neighbor(Neighbor::new("a", A, "10.255.0.1/31"));
    b_config.auth = format!("crl = \"{}\"\n", crl_file.display());
    let a = Daemon::start(&a_ns, dir.path(), &a_config, &[]).or_panic();
    let b = Daemon::start(&b_ns, dir.path(), &b_config, &[]).or_panic();
    a.wait_established("b", UP).or_panic();
    b.wait_established("a", UP).or_panic();

    let serial = own_cert(&b).or_panic().serial;
    ca.ctl(&["revoke", &serial]);
    // a hosts the CA and reads its CRL from it; b reads the file once it is rewritten.
    wait_revoked_by(&a, "hosted CA", &serial);
    ca.ctl(&["crl", "--out", enroll_common::path_str(&crl_file)]);
    wait_revoked_by(&b, &crl_file.display().to_string(), &serial);

    ctl_ok(&b, &["terminate", "a"]);
    ctl_ok(&b, &["initiate", "a"]);
    wait_until(
        "a to refuse b's revoked certificate",
        UP,
        Duration::from_millis(200),
        || {
            Ok(a.neighbor("b")?.is_some_and(|n| {
                n.link_state == LinkState::Down
                    && n.last_error.is_some_and(|e| e.message.contains("Revoked"))
            }))
        },
    )
    .or_panic();
}
