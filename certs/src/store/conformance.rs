//! The behaviour every [`CaStore`] must show, as one check run against each implementation.

use std::net::IpAddr;

use super::{CaStore, IssuedRecord, StoreError};
use crate::token::{JoinToken, TokenError, TokenRecord};

const NOW: u64 = 1_000;

fn token(identity: &str, expires: u64) -> (JoinToken, TokenRecord) {
    let token = JoinToken::generate().expect("random token");
    let record = TokenRecord {
        hash: token.hash(),
        identity: identity.into(),
        endpoint: endpoint(),
        created: NOW,
        expires,
        used: None,
    };
    (token, record)
}

fn endpoint() -> IpAddr {
    IpAddr::from([192, 0, 2, 2])
}

fn issued(serial: &str, identity: &str) -> IssuedRecord {
    IssuedRecord {
        serial: serial.into(),
        identity: identity.into(),
        endpoint: Some(endpoint()),
        not_before: NOW,
        not_after: NOW + 100,
        renews: None,
        revoked_at: None,
    }
}

/// Runs every check, each on a fresh store from `fresh`.
pub fn check_all(fresh: &dyn Fn() -> Box<dyn CaStore>) {
    tokens_are_single_use(fresh().as_ref());
    refusals_change_nothing(fresh().as_ref());
    reissue_and_revoke(fresh().as_ref());
    concurrent_redeems_spend_once(fresh().as_ref());
}

fn tokens_are_single_use(store: &dyn CaStore) {
    let (token, record) = token("b.vn.example", NOW + 60);
    store.put_token(&record).unwrap();
    assert!(matches!(
        store.put_token(&record),
        Err(StoreError::DuplicateToken)
    ));
    assert_eq!(store.token(&token.hash()).unwrap(), Some(record));
    store
        .redeem_token_and_record(&token.hash(), NOW, &issued("0a", "b.vn.example"))
        .unwrap();
    let used = store.token(&token.hash()).unwrap().unwrap();
    assert_eq!(used.used, Some((NOW, "0a".to_owned())));
    assert_eq!(
        store.issued("0a").unwrap(),
        Some(issued("0a", "b.vn.example"))
    );
    let again = store.redeem_token_and_record(&token.hash(), NOW, &issued("0b", "b.vn.example"));
    assert!(matches!(again, Err(StoreError::Token(TokenError::Used))));
    assert_eq!(store.issued("0b").unwrap(), None);
}

fn refusals_change_nothing(store: &dyn CaStore) {
    let (token, record) = token("b.vn.example", NOW + 60);
    store.put_token(&record).unwrap();
    let cases = [
        (NOW, issued("01", "c.vn.example"), TokenError::Mismatch),
        (NOW + 60, issued("02", "b.vn.example"), TokenError::Expired),
    ];
    for (now, rec, expected) in cases {
        let err = store
            .redeem_token_and_record(&token.hash(), now, &rec)
            .unwrap_err();
        assert!(matches!(err, StoreError::Token(e) if e == expected));
        assert_eq!(store.issued(&rec.serial).unwrap(), None);
    }
    let mut moved = issued("03", "b.vn.example");
    moved.endpoint = Some(IpAddr::from([192, 0, 2, 99]));
    assert!(matches!(
        store.redeem_token_and_record(&token.hash(), NOW, &moved),
        Err(StoreError::Token(TokenError::Mismatch))
    ));
    let stranger = JoinToken::generate().unwrap();
    assert!(matches!(
        store.redeem_token_and_record(&stranger.hash(), NOW, &issued("04", "b.vn.example")),
        Err(StoreError::Token(TokenError::Unknown))
    ));
    // A serial collision aborts the whole redemption: the token stays usable.
    store
        .record_issued(&issued("05", "server.vn.example"))
        .unwrap();
    assert!(matches!(
        store.redeem_token_and_record(&token.hash(), NOW, &issued("05", "b.vn.example")),
        Err(StoreError::DuplicateSerial(_))
    ));
    assert_eq!(store.token(&token.hash()).unwrap().unwrap().used, None);
    assert_eq!(store.list().unwrap().len(), 1);
}

fn reissue_and_revoke(store: &dyn CaStore) {
    store.record_issued(&issued("10", "b.vn.example")).unwrap();
    let mut renewal = issued("11", "b.vn.example");
    renewal.renews = Some("10".into());
    store.record_reissue(&renewal).unwrap();
    let mut orphan = issued("12", "b.vn.example");
    orphan.renews = Some("99".into());
    assert!(matches!(
        store.record_reissue(&orphan),
        Err(StoreError::UnknownSerial(_))
    ));

    assert!(!store.is_revoked("11").unwrap());
    assert!(
        store.is_revoked("99").unwrap(),
        "unknown serials count as revoked"
    );
    assert_eq!(
        store.revoke("11", NOW + 5).unwrap().revoked_at,
        Some(NOW + 5)
    );
    assert_eq!(
        store.revoke("11", NOW + 9).unwrap().revoked_at,
        Some(NOW + 5)
    );
    assert!(store.is_revoked("11").unwrap());
    assert!(matches!(
        store.revoke("99", NOW),
        Err(StoreError::UnknownSerial(_))
    ));

    let mut from_revoked = issued("13", "b.vn.example");
    from_revoked.renews = Some("11".into());
    assert!(matches!(
        store.record_reissue(&from_revoked),
        Err(StoreError::Revoked(_))
    ));
    assert_eq!(store.issued("13").unwrap(), None);
    let serials: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(serials, ["10", "11"]);
}

fn concurrent_redeems_spend_once(store: &dyn CaStore) {
    let (token, record) = token("b.vn.example", NOW + 60);
    store.put_token(&record).unwrap();
    let hash = token.hash();
    let successes = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    let rec = issued(&format!("2{i}"), "b.vn.example");
                    store.redeem_token_and_record(&hash, NOW, &rec).is_ok()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("redeem thread"))
            .filter(|&ok| ok)
            .count()
    });
    assert_eq!(successes, 1);
    assert_eq!(store.list().unwrap().len(), 1);
}
