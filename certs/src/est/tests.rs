//! The library client against the library server over real TLS on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;

use super::client::csr_for;
use super::*;
use crate::testutil::{TempDir, new_ca};
use crate::{Algorithm, Ca, NodeId, unix_now};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn serial(cert: &[u8]) -> String {
    hex::encode(
        x509_parser::parse_x509_certificate(cert)
            .unwrap()
            .1
            .raw_serial(),
    )
}

/// A running server, stopped when dropped.
struct Running {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(ca: Arc<Ca>, cert_lifetime: Duration) -> Running {
    install_crypto_provider();
    let config = ServerConfig {
        listen: SocketAddr::new(LOOPBACK, 0),
        names: vec![NodeId::Ip(LOOPBACK)],
        cert_lifetime,
        limits: Limits::default(),
    };
    let server = Server::bind(ca, config).await.unwrap();
    let url = format!("https://{}", server.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        url,
        stop: Some(stop),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_renew_and_revoke_over_https() {
    let (_dir, ca) = new_ca(Algorithm::Ed25519, unix_now());
    let ca = Arc::new(ca);
    let id: NodeId = "b.vn.example".parse().unwrap();
    let endpoint: IpAddr = "192.0.2.2".parse().unwrap();
    let token = ca
        .create_token(&id, endpoint, Duration::from_secs(600), unix_now())
        .unwrap();
    let running = serve(ca.clone(), Duration::from_secs(3600)).await;

    let wrong_pin = [0x5a; 32];
    let refused = enroll(
        &running.url,
        &token.reveal(),
        &wrong_pin,
        &id,
        Algorithm::Ed25519,
    )
    .await;
    assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");
    let cacerts = fetch_cacerts(&running.url, &ca.fingerprint())
        .await
        .unwrap();
    assert_eq!(cacerts, vec![ca.cert().clone()]);

    let enrolled = enroll(
        &running.url,
        &token.reveal(),
        &ca.fingerprint(),
        &id,
        Algorithm::P256,
    )
    .await
    .unwrap();
    assert_eq!(enrolled.ca_chain, vec![ca.cert().clone()]);
    let record = ca.store().issued(&serial(&enrolled.cert)).unwrap().unwrap();
    assert_eq!(
        (record.identity.as_str(), record.endpoint),
        ("b.vn.example", Some(endpoint))
    );
    let again = enroll(
        &running.url,
        &token.reveal(),
        &ca.fingerprint(),
        &id,
        Algorithm::Ed25519,
    )
    .await;
    assert!(
        matches!(
            again,
            Err(ClientError::Refused {
                status: StatusCode::UNAUTHORIZED,
                ..
            })
        ),
        "{again:?}"
    );

    let dir = TempDir::new();
    enrolled.save(&dir.0).unwrap();
    let loaded = Credentials::load(&dir.0).unwrap();
    let renewed = reenroll(&running.url, &loaded).await.unwrap();
    assert_ne!(serial(&renewed.cert), serial(&enrolled.cert));
    assert_eq!(*renewed.key_pem, *enrolled.key_pem);
    let record = ca.store().issued(&serial(&renewed.cert)).unwrap().unwrap();
    assert_eq!(record.renews, Some(serial(&enrolled.cert)));
    assert_eq!(record.endpoint, Some(endpoint));

    ca.revoke(&serial(&renewed.cert), unix_now()).unwrap();
    let revoked = reenroll(&running.url, &renewed).await;
    assert!(
        matches!(
            revoked,
            Err(ClientError::Refused {
                status: StatusCode::FORBIDDEN,
                ..
            })
        ),
        "{revoked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_cannot_renew() {
    let (_dir, ca) = new_ca(Algorithm::Ed25519, unix_now());
    let ca = Arc::new(ca);
    let id: NodeId = "b.vn.example".parse().unwrap();
    let token = ca
        .create_token(&id, LOOPBACK, Duration::from_secs(600), unix_now())
        .unwrap();
    let running = serve(ca.clone(), Duration::from_secs(2)).await;
    let enrolled = enroll(
        &running.url,
        &token.reveal(),
        &ca.fingerprint(),
        &id,
        Algorithm::Ed25519,
    )
    .await
    .unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&enrolled.cert).unwrap();
    let not_after = x509.validity().not_after.timestamp() as u64;
    // Wait (bounded) until the certificate's last second has passed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while unix_now() <= not_after {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clock did not advance"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = reenroll(&running.url, &enrolled).await;
    assert!(
        matches!(refused, Err(ClientError::Tls(_) | ClientError::Http(_))),
        "{refused:?}"
    );
    assert_eq!(
        ca.store().list().unwrap().len(),
        2,
        "server and the one node certificate"
    );
}

#[test]
fn renewal_falls_due_at_two_thirds_of_the_lifetime() {
    const NOW: u64 = 1_800_000_000;
    let (_dir, ca) = new_ca(Algorithm::Ed25519, NOW);
    let id: NodeId = "b.vn.example".parse().unwrap();
    let key = Algorithm::Ed25519.generate().unwrap();
    let token = ca
        .create_token(&id, LOOPBACK, Duration::from_secs(60), NOW)
        .unwrap();
    let cert = ca
        .enroll(
            &token.reveal(),
            &csr_for(&id, &key).unwrap(),
            Duration::from_secs(300),
            NOW,
        )
        .unwrap();
    let (_, x509) = x509_parser::parse_x509_certificate(&cert).unwrap();
    let not_before = x509.validity().not_before.timestamp() as u64;
    let not_after = x509.validity().not_after.timestamp() as u64;
    let due = not_before + (not_after - not_before) * 2 / 3;
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    assert!(!renew_due(&cert, at(NOW)).unwrap());
    assert!(!renew_due(&cert, at(due - 1)).unwrap());
    assert!(renew_due(&cert, at(due)).unwrap());
    assert!(renew_due(&cert, SystemTime::now().max(at(not_after + 1))).unwrap());
}
