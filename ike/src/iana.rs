//! IANA "Internet Key Exchange Version 2 (IKEv2) Parameters" registries: the numbers the
//! engine speaks. Every module takes its numbers from here so that no registry value is
//! written twice.
//!
//! Each registry is a newtype over its wire integer with named constants, so that values
//! we do not know survive a parse/emit round trip unchanged.

use core::fmt;

macro_rules! registry {
    (
        $(#[$attr:meta])*
        pub struct $name:ident($ty:ty) {
            $( $(#[$vattr:meta])* $variant:ident = $value:expr, )*
        }
    ) => {
        $(#[$attr])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);

        impl $name {
            $( $(#[$vattr])* pub const $variant: Self = Self($value); )*

            /// The registry name of a known value.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some(stringify!($variant)), )*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                Self(v)
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                v.0
            }
        }
    };
}

registry! {
    /// Exchange types (RFC 7296 §3.1).
    pub struct ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
    }
}

registry! {
    /// Payload types (RFC 7296 §3.2, RFC 7383).
    pub struct PayloadType(u8) {
        NONE = 0,
        SA = 33,
        KE = 34,
        IDI = 35,
        IDR = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        NONCE = 40,
        NOTIFY = 41,
        DELETE = 42,
        VENDOR_ID = 43,
        TSI = 44,
        TSR = 45,
        SK = 46,
        CP = 47,
        EAP = 48,
        SKF = 53,
    }
}

registry! {
    /// Security protocol identifiers (RFC 7296 §3.3.1).
    pub struct ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
}

registry! {
    /// Transform types (RFC 7296 §3.3.2).
    pub struct TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        DH = 4,
        ESN = 5,
    }
}

registry! {
    /// Transform type 1, encryption algorithms.
    pub struct EncrId(u16) {
        AES_CBC = 12,
        AES_GCM_8 = 18,
        AES_GCM_12 = 19,
        AES_GCM_16 = 20,
        CHACHA20_POLY1305 = 28,
    }
}

registry! {
    /// Transform type 2, pseudorandom functions.
    pub struct PrfId(u16) {
        HMAC_SHA1 = 2,
        HMAC_SHA2_256 = 5,
        HMAC_SHA2_384 = 6,
        HMAC_SHA2_512 = 7,
    }
}

registry! {
    /// Transform type 3, integrity algorithms.
    pub struct IntegId(u16) {
        NONE = 0,
        HMAC_SHA1_96 = 2,
        HMAC_SHA2_256_128 = 12,
        HMAC_SHA2_384_192 = 13,
        HMAC_SHA2_512_256 = 14,
    }
}

registry! {
    /// Transform type 4, key exchange (Diffie-Hellman) groups.
    pub struct DhId(u16) {
        NONE = 0,
        MODP_2048 = 14,
        ECP_256 = 19,
        ECP_384 = 20,
        CURVE25519 = 31,
    }
}

registry! {
    /// Transform type 5, extended sequence numbers.
    pub struct EsnId(u16) {
        NO_ESN = 0,
        ESN = 1,
    }
}

registry! {
    /// Transform attribute types (RFC 7296 §3.3.5).
    pub struct TransformAttrType(u16) {
        KEY_LENGTH = 14,
    }
}

registry! {
    /// Identification types (RFC 7296 §3.5).
    pub struct IdType(u8) {
        IPV4_ADDR = 1,
        FQDN = 2,
        RFC822_ADDR = 3,
        IPV6_ADDR = 5,
        DER_ASN1_DN = 9,
        DER_ASN1_GN = 10,
        KEY_ID = 11,
    }
}

registry! {
    /// Certificate encodings (RFC 7296 §3.6).
    pub struct CertEncoding(u8) {
        X509_SIGNATURE = 4,
        CRL = 7,
        HASH_URL_X509 = 12,
        HASH_URL_BUNDLE = 13,
    }
}

registry! {
    /// Authentication methods (RFC 7296 §3.8, RFC 7427).
    pub struct AuthMethod(u8) {
        RSA_SIG = 1,
        SHARED_KEY = 2,
        DSS_SIG = 3,
        ECDSA_SHA256_P256 = 9,
        ECDSA_SHA384_P384 = 10,
        ECDSA_SHA512_P521 = 11,
        DIGITAL_SIGNATURE = 14,
    }
}

registry! {
    /// Hash algorithms for RFC 7427 (SIGNATURE_HASH_ALGORITHMS, RFC 7427 §4, RFC 8420).
    pub struct HashAlgorithm(u16) {
        SHA1 = 1,
        SHA2_256 = 2,
        SHA2_384 = 3,
        SHA2_512 = 4,
        IDENTITY = 5,
    }
}

registry! {
    /// Traffic selector types (RFC 7296 §3.13.1).
    pub struct TsType(u8) {
        IPV4_ADDR_RANGE = 7,
        IPV6_ADDR_RANGE = 8,
    }
}

registry! {
    /// IP protocol numbers as carried in a traffic selector (IANA "Assigned Internet
    /// Protocol Numbers"); 0 in a selector means any protocol (RFC 7296 §3.13.1).
    pub struct IpProtocol(u8) {
        ANY = 0,
        /// IPv4 encapsulation (IP-in-IP, RFC 2003): the IIPtran tunnel header.
        IPIP = 4,
        /// IPv6 encapsulation (RFC 2473): tunnels carrying IPv6 inner packets.
        IPV6 = 41,
    }
}

registry! {
    /// Configuration payload types (RFC 7296 §3.15).
    pub struct CfgType(u8) {
        CFG_REQUEST = 1,
        CFG_REPLY = 2,
        CFG_SET = 3,
        CFG_ACK = 4,
    }
}

registry! {
    /// Configuration attribute types (RFC 7296 §3.15.1).
    pub struct CfgAttrType(u16) {
        INTERNAL_IP4_ADDRESS = 1,
        INTERNAL_IP4_NETMASK = 2,
        INTERNAL_IP4_DNS = 3,
        INTERNAL_IP6_ADDRESS = 8,
        INTERNAL_IP6_DNS = 10,
    }
}

registry! {
    /// Notify message types (RFC 7296 §3.10.1 and later RFCs). Values below 16384 are
    /// errors, the rest status.
    pub struct NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        MOBIKE_SUPPORTED = 16396,
        MULTIPLE_AUTH_SUPPORTED = 16404,
        REDIRECT_SUPPORTED = 16406,
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        SIGNATURE_HASH_ALGORITHMS = 16431,
    }
}

impl NotifyType {
    /// Error types occupy 0..16383 (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}
