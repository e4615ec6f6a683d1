//! When a node renews its certificate: at two thirds of the lifetime, and after a failed
//! attempt again with a back-off that grows but stays short enough to fit several more
//! attempts before the certificate expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

use super::ClientError;

/// The renewal timing of one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalSchedule {
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Bounds of the first retry delay and of the longest one.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(3600);

impl RenewalSchedule {
    /// The schedule of a certificate valid from `not_before` until `not_after`.
    pub fn new(not_before: SystemTime, not_after: SystemTime) -> Self {
        Self {
            not_before,
            not_after: not_after.max(not_before),
        }
    }

    /// The schedule of a DER certificate, from its validity period.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, ClientError> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        Ok(Self::new(
            at(x509.validity().not_before.timestamp()),
            at(x509.validity().not_after.timestamp()),
        ))
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// Two thirds through the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }

    pub fn due(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// How long to wait after the `failures`-th failed attempt in a row (from 1): a
    /// hundredth of the lifetime (1 s to 30 s), doubled with each failure, at most a
    /// tenth of the lifetime (1 s to 1 h).
    pub fn retry_after(&self, failures: u32) -> Duration {
        let lifetime = self.lifetime();
        let first = (lifetime / 100).clamp(MIN_RETRY, MAX_FIRST_RETRY);
        let longest = (lifetime / 10).clamp(MIN_RETRY, MAX_RETRY);
        let doublings = failures.saturating_sub(1).min(31);
        first.saturating_mul(1 << doublings).min(longest)
    }

    /// When to try next at `now`, after `failures` failed attempts in a row since the
    /// certificate was issued.
    pub fn next_attempt(&self, now: SystemTime, failures: u32) -> SystemTime {
        if failures == 0 {
            self.renew_at().max(now)
        } else {
            now + self.retry_after(failures)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn first_attempt_at_two_thirds_or_now_when_late() {
        let s = RenewalSchedule::new(at(1_000), at(1_000 + 30 * 86_400));
        assert_eq!(s.renew_at(), at(1_000 + 20 * 86_400));
        assert_eq!(s.next_attempt(at(2_000), 0), at(1_000 + 20 * 86_400));
        assert!(!s.due(at(1_000 + 20 * 86_400 - 1)));
        assert!(s.due(at(1_000 + 20 * 86_400)));
        let late = at(1_000 + 25 * 86_400);
        assert_eq!(s.next_attempt(late, 0), late);
    }

    #[test]
    fn retries_double_up_to_a_tenth_of_the_lifetime() {
        let month = RenewalSchedule::new(at(0), at(30 * 86_400));
        let delays: Vec<u64> = (1..=9).map(|f| month.retry_after(f).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(month.retry_after(u32::MAX), Duration::from_secs(3600));
        let now = at(25 * 86_400);
        assert_eq!(month.next_attempt(now, 2), now + Duration::from_secs(60));
    }

    #[test]
    fn short_lifetimes_retry_every_second_or_few() {
        let short = RenewalSchedule::new(at(100), at(130));
        assert_eq!(short.renew_at(), at(120));
        let delays: Vec<u64> = (1..=4).map(|f| short.retry_after(f).as_secs()).collect();
        assert_eq!(delays, [1, 2, 3, 3]);
    }

    #[test]
    fn an_inverted_validity_is_due_at_once() {
        let odd = RenewalSchedule::new(at(500), at(100));
        assert_eq!(odd.renew_at(), at(500));
        assert_eq!(odd.retry_after(3), MIN_RETRY);
    }
}
