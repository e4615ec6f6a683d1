//! The VN certificate authority and EST-style (RFC 7030) enrollment.
