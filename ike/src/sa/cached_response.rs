//! An IKE SA's last response, kept until a later request shows the peer has it (RFC 7296
//! §2.1), to answer a retransmitted request.

use std::sync::Arc;

use memchr::memmem;
use smallvec::SmallVec;

use crate::iana::PayloadType;
use crate::wire::Header;

pub(super) enum CachedResponse {
    /// Sent in the clear (IKE_SA_INIT): the datagrams as sent.
    Plain(Vec<Vec<u8>>),
    /// Encrypted: the message before sealing, sealed anew for a retransmission.
    Sealed(Box<Unsealed>),
}

/// An encrypted message before sealing: its header and inner payloads.
pub(super) struct Unsealed {
    pub header: Header,
    pub first: PayloadType,
    pub plaintext: Plaintext,
}

/// The inner payload chain of a message with our own certificates cut out. They are most
/// of an IKE_AUTH response and the same in every one, so the IKE SAs hold them by
/// reference instead of a copy each: the ciphertext as sent would be a copy.
pub(super) struct Plaintext {
    rest: Box<[u8]>,
    /// Where in `rest` each certificate cut out goes, and which of `certificates` it is:
    /// mostly our own certificate alone, which needs no allocation.
    cuts: SmallVec<[(usize, usize); 1]>,
    certificates: Option<Arc<[Vec<u8>]>>,
}

impl Plaintext {
    /// `chain` with the `certificates` found in it, in their order, cut out.
    pub fn new(chain: &[u8], certificates: Option<&Arc<[Vec<u8>]>>) -> Self {
        let mut rest = Vec::with_capacity(chain.len());
        let mut cuts = SmallVec::new();
        let mut from = 0;
        for (i, cert) in certificates.into_iter().flat_map(|c| c.iter().enumerate()) {
            let found = chain
                .get(from..)
                .filter(|_| !cert.is_empty())
                .and_then(|tail| memmem::find(tail, cert));
            if let Some(at) = found {
                rest.extend_from_slice(&chain[from..from + at]);
                cuts.push((rest.len(), i));
                from += at + cert.len();
            }
        }
        rest.extend_from_slice(chain.get(from..).unwrap_or_default());
        Self {
            rest: rest.into_boxed_slice(),
            certificates: (!cuts.is_empty()).then(|| certificates.cloned()).flatten(),
            cuts,
        }
    }

    /// The chain as it was given.
    pub fn assemble(&self) -> Vec<u8> {
        let certificate = |i: usize| {
            self.certificates
                .as_deref()
                .and_then(|c| c.get(i))
                .map_or(&[][..], Vec::as_slice)
        };
        let cut_len: usize = self.cuts.iter().map(|&(_, i)| certificate(i).len()).sum();
        let mut chain = Vec::with_capacity(self.rest.len() + cut_len);
        let mut from = 0;
        for &(at, i) in self.cuts.iter() {
            chain.extend_from_slice(&self.rest[from..at]);
            chain.extend_from_slice(certificate(i));
            from = at;
        }
        chain.extend_from_slice(&self.rest[from..]);
        chain
    }

    /// Bytes held by this IKE SA alone.
    #[cfg(test)]
    pub fn own_len(&self) -> usize {
        self.rest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn certs(list: &[&[u8]]) -> Arc<[Vec<u8>]> {
        list.iter().map(|c| c.to_vec()).collect()
    }

    #[test]
    fn certificates_are_cut_out_and_put_back() {
        let chain = certs(&[b"LEAF-CERT", b"INTERMEDIATE"]);
        let message = b"id..LEAF-CERT..INTERMEDIATE..auth".to_vec();
        let p = Plaintext::new(&message, Some(&chain));
        assert_eq!(p.own_len(), message.len() - 9 - 12);
        assert_eq!(p.assemble(), message);
    }

    #[test]
    fn without_our_certificates_the_chain_is_kept_whole() {
        let message = b"id..auth".to_vec();
        let p = Plaintext::new(&message, Some(&certs(&[b"LEAF-CERT"])));
        assert_eq!(p.own_len(), message.len());
        assert!(p.certificates.is_none());
        assert_eq!(p.assemble(), message);
        assert_eq!(Plaintext::new(&message, None).assemble(), message);
    }

    proptest! {
        /// Whatever the chain and the certificates, what is put back is what was given.
        #[test]
        fn assemble_gives_back_the_chain(
            chain in proptest::collection::vec(0u8..4, 0..64),
            list in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..4), 0..4),
        ) {
            let certificates: Arc<[Vec<u8>]> = list.into();
            let p = Plaintext::new(&chain, Some(&certificates));
            prop_assert_eq!(p.assemble(), chain);
        }
    }
}
