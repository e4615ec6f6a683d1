//! The X25519 function of RFC 7748 for the key exchange.
//!
//! x25519-dalek computes it with the Montgomery ladder on curve25519-dalek's portable field
//! arithmetic. A u coordinate on the curve itself (what every honest peer sends) names an
//! Edwards point too, and curve25519-dalek multiplies Edwards points with its AVX2 backend
//! where the CPU has one: the same u coordinate comes out in about two thirds of the time,
//! which counts twice per setup on a busy responder. Values on the twist, which only a
//! broken or hostile peer sends, keep the ladder. Both multiplications are constant-time in
//! the scalar; which one runs depends on the public value only.

use curve25519_dalek::montgomery::MontgomeryPoint;
use zeroize::{Zeroize, Zeroizing};

pub const LEN: usize = 32;

/// X25519(`scalar`, `u`): the scalar clamped and the top bit of `u` ignored, as RFC 7748
/// §5 asks. All zero when `u` is of small order.
pub fn x25519(scalar: &[u8; LEN], u: &[u8; LEN]) -> Zeroizing<[u8; LEN]> {
    let peer = MontgomeryPoint(*u);
    // Either sign names a point with this u; its multiples share their u coordinates too.
    let shared = match peer.to_edwards(0) {
        Some(point) => {
            let mut product = point.mul_clamped(*scalar);
            let u = product.to_montgomery();
            product.zeroize();
            u
        }
        None => peer.mul_clamped(*scalar),
    };
    Zeroizing::new(shared.to_bytes())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// u coordinates of the small-order points (RFC 7748 §7 and the usual blocklist), and
    /// encodings at and above p, with and without the top bit.
    fn edge_values() -> Vec<[u8; LEN]> {
        let hex = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
            "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
            "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "0900000000000000000000000000000000000000000000000000000000000080",
        ];
        hex.iter()
            .map(|h| hex::decode(h).expect("hex").try_into().expect("32 octets"))
            .collect()
    }

    #[test]
    fn agrees_with_the_ladder_on_edge_values() {
        let scalars = [[0u8; LEN], [0xff; LEN], [0x5a; LEN], [1; LEN]];
        for u in edge_values() {
            for scalar in &scalars {
                assert_eq!(
                    *x25519(scalar, &u),
                    x25519_dalek::x25519(*scalar, u),
                    "u = {}",
                    hex::encode(u)
                );
            }
        }
    }

    #[test]
    fn small_order_values_give_zero() {
        for u in &edge_values()[..3] {
            assert_eq!(*x25519(&[0x77; LEN], u), [0u8; LEN]);
        }
    }

    proptest! {
        /// Random octets are a curve point or a twist point about equally often, so both
        /// paths are compared with the ladder.
        #[test]
        fn agrees_with_the_ladder(scalar in any::<[u8; LEN]>(), u in any::<[u8; LEN]>()) {
            prop_assert_eq!(*x25519(&scalar, &u), x25519_dalek::x25519(scalar, u));
        }

        /// Public values made by the ladder are on the curve: the Edwards path.
        #[test]
        fn agrees_on_honest_public_values(a in any::<[u8; LEN]>(), b in any::<[u8; LEN]>()) {
            let public = x25519_dalek::x25519(b, x25519_dalek::X25519_BASEPOINT_BYTES);
            prop_assert!(MontgomeryPoint(public).to_edwards(0).is_some());
            prop_assert_eq!(*x25519(&a, &public), x25519_dalek::x25519(a, public));
        }
    }
}
