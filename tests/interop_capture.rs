//! One IIPtran setup between iiptrand and strongSwan's charon captured with tcpdump and
//! dissected by tshark: with AES-CBC-256/HMAC-SHA2-256 for IKE, tshark decrypts IKE_AUTH
//! with the keys charon logs at `ike = 4` and must find nothing malformed, the
//! USE_TRANSPORT_MODE notify and traffic selectors for IP protocol 4 only. iiptrand, with
//! its opt-in key logging (`IIPTRAN_LOG_IKE_KEYS=1`), logs the same keys.
//! Needs root and `tests/interop/setup`.

mod support;

use iiptran::daemon::LOG_IKE_KEYS;
use iiptran_testkit::strongswan::Installation;
use support::OrPanic;
use support::capture::Capture;
use support::peering::{Keys, OURS, Peering, Plan, THEIRS};

#[test]
fn ike_auth_decrypted_shows_transport_mode_and_ipip_selectors() {
    if !iiptran_testkit::have_root("ike_auth_decrypted_shows_transport_mode_and_ipip_selectors") {
        return;
    }
    let install = Installation::find(&support::capture::TOOLS).or_panic();
    let mut plan = Plan::new(Keys::Psk, false).suite("aes256-sha256-x25519", "aes256gcm16");
    plan.charon.ike_log_level = 4;
    plan.daemon_env = vec![(LOG_IKE_KEYS, "1".into())];
    let peering = Peering::start(&install, &plan).or_panic();
    let mut capture = Capture::start(
        &peering.ours,
        &peering.ifname,
        "udp port 500 or udp port 4500",
    )
    .or_panic();
    let sa = peering.establish(&plan).or_panic();
    capture.stop().or_panic();
    let keys = peering.charon.ike_keys(&sa).or_panic();
    let logged = peering.daemon.ike_keys();
    assert_eq!(logged, std::slice::from_ref(&keys), "iiptrand's key log");
    let auth = capture
        .dissect_decrypted(&keys, "isakmp.exchangetype == 35")
        .or_panic();
    assert!(!auth.contains("Malformed"), "{auth}");
    let frames: Vec<&str> = auth.split("\nFrame ").collect();
    assert_eq!(frames.len(), 2, "IKE_AUTH request and response:\n{auth}");
    for (frame, from) in frames.iter().zip([THEIRS, OURS]) {
        let what = format!("IKE_AUTH from {from}:\n{frame}");
        assert!(frame.contains(&format!("Src: {from},")), "{what}");
        assert!(frame.contains("Decrypted Data"), "{what}");
        assert!(
            frame.contains("<HMAC_SHA2_256_128 [RFC4868]>[correct]"),
            "{what}"
        );
        assert!(
            frame.contains("Notify Message Type: USE_TRANSPORT_MODE (16391)"),
            "{what}"
        );
        // TSi then TSr, each one IPv4 range of one address, protocol 4, all ports.
        let selectors: Vec<Vec<&str>> = frame
            .split("Traffic Selector Type: ")
            .skip(1)
            .map(|ts| ts.lines().take(7).map(str::trim).collect())
            .collect();
        let expected = |addr: std::net::IpAddr| {
            let addr = format!("{addr}");
            vec![
                "TS_IPV4_ADDR_RANGE (7)".to_owned(),
                "Protocol ID: IPIP (4)".to_owned(),
                "Selector Length: 16".to_owned(),
                "Start Port: 0".to_owned(),
                "End Port: 65535".to_owned(),
                format!("Starting Addr: {addr}"),
                format!("Ending Addr: {addr}"),
            ]
        };
        assert_eq!(selectors, [expected(THEIRS), expected(OURS)], "{what}");
    }
    let all = capture.summary("").or_panic();
    assert!(!all.contains("Malformed"), "{all}");
}
