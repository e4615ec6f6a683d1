use super::header::Header;
use crate::iana::PayloadType;

/// What was wrong with a message we parsed or could not build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("datagram of {0} bytes is shorter than the IKE header")]
    TruncatedHeader(usize),
    /// Answered with INVALID_MAJOR_VERSION; the header lets the engine address the reply.
    #[error("unsupported IKE major version {major}")]
    UnsupportedVersion { major: u8, header: Header },
    #[error("IKE length field says {field} bytes but the datagram holds {actual}")]
    LengthMismatch { field: u32, actual: usize },
    #[error("{ty} payload: generic header truncated")]
    TruncatedPayload { ty: PayloadType },
    #[error("{ty} payload: length {length} does not fit the {remaining} bytes left")]
    PayloadLength {
        ty: PayloadType,
        length: u16,
        remaining: usize,
    },
    /// Answered with UNSUPPORTED_CRITICAL_PAYLOAD carrying this type (RFC 7296 §2.5).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(PayloadType),
    #[error("malformed {ty} payload: {reason}")]
    Malformed {
        ty: PayloadType,
        reason: &'static str,
    },
    #[error("{0} payload is not the last payload")]
    EncryptedNotLast(PayloadType),
    #[error("{0} payload inside an encrypted payload")]
    NestedEncrypted(PayloadType),
    #[error("{0} bytes after the last payload")]
    TrailingBytes(usize),
    #[error("cannot encode {ty} payload: {reason}")]
    Unencodable {
        ty: PayloadType,
        reason: &'static str,
    },
    #[error("message of {0} bytes is too long to encode")]
    MessageTooLong(usize),
    #[error("sealed body is {actual} bytes but {expected} were announced")]
    SealedLength { expected: usize, actual: usize },
    #[error("a datagram of at most {0} bytes cannot carry a fragment")]
    NoRoomForFragment(usize),
}
