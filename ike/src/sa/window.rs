//! Message IDs with a window of one in each direction (RFC 7296 §2.3): the request we
//! wait on with its retransmission schedule, and the last response we sent, kept for
//! retransmitted requests.

use super::cached_response::CachedResponse;
use crate::config::Retransmission;
use std::time::Instant;

/// The request we sent and wait on. `T` is what the exchange needs to process the
/// response.
pub(super) struct Outstanding<T> {
    pub id: u32,
    pub datagrams: Vec<Vec<u8>>,
    /// Transmissions so far, the first included.
    pub sent: u32,
    pub deadline: Instant,
    pub exchange: T,
}

/// What a timer expiry means for the outstanding request.
pub(super) enum Expiry {
    NotYet,
    Retransmit,
    GiveUp,
}

pub(super) struct Requests<T> {
    pub next_id: u32,
    /// Boxed: an IKE SA is idle most of its life, and the exchange state is large.
    pub outstanding: Option<Box<Outstanding<T>>>,
}

impl<T> Requests<T> {
    pub fn new(next_id: u32) -> Self {
        Self {
            next_id,
            outstanding: None,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.outstanding.is_none()
    }

    /// Records a request sent now; returns its message ID.
    pub fn start(
        &mut self,
        now: Instant,
        schedule: &Retransmission,
        datagrams: Vec<Vec<u8>>,
        exchange: T,
    ) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.outstanding = Some(Box::new(Outstanding {
            id,
            datagrams,
            sent: 1,
            deadline: now + schedule.wait(0),
            exchange,
        }));
        id
    }

    /// Whether a response with this ID answers our request.
    pub fn answers(&self, id: u32) -> bool {
        self.outstanding.as_ref().is_some_and(|o| o.id == id)
    }

    pub fn finish(&mut self) -> Option<Outstanding<T>> {
        self.outstanding.take().map(|o| *o)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.outstanding.as_ref().map(|o| o.deadline)
    }

    pub fn expire(&mut self, now: Instant, schedule: &Retransmission) -> Expiry {
        let Some(o) = self.outstanding.as_mut() else {
            return Expiry::NotYet;
        };
        if now < o.deadline {
            return Expiry::NotYet;
        }
        if o.sent > schedule.tries {
            return Expiry::GiveUp;
        }
        o.deadline = now + schedule.wait(o.sent);
        o.sent += 1;
        Expiry::Retransmit
    }
}

/// What to do with a request by its message ID.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    New,
    /// The request we answered last: send the same response again.
    Retransmitted,
    Stale,
}

pub(super) struct Responses {
    pub expected: u32,
    last: Option<(u32, CachedResponse)>,
}

impl Responses {
    pub fn new(expected: u32) -> Self {
        Self {
            expected,
            last: None,
        }
    }

    pub fn classify(&self, id: u32) -> Incoming {
        if id == self.expected {
            Incoming::New
        } else if self.last.as_ref().is_some_and(|(last, _)| *last == id) {
            Incoming::Retransmitted
        } else {
            Incoming::Stale
        }
    }

    pub fn answered(&mut self, id: u32, response: CachedResponse) {
        self.expected = id.wrapping_add(1);
        self.last = Some((id, response));
    }

    pub fn cached(&self) -> Option<&CachedResponse> {
        self.last.as_ref().map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn back_off_then_give_up() {
        let schedule = Retransmission {
            timeout: Duration::from_secs(1),
            base: 2.0,
            tries: 2,
        };
        let t0 = Instant::now();
        let mut r = Requests::new(0);
        assert_eq!(r.start(t0, &schedule, vec![vec![1]], ()), 0);
        assert!(matches!(r.expire(t0, &schedule), Expiry::NotYet));
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(r.expire(t1, &schedule), Expiry::Retransmit));
        assert_eq!(r.deadline(), Some(t1 + Duration::from_secs(2)));
        let t2 = t1 + Duration::from_secs(2);
        assert!(matches!(r.expire(t2, &schedule), Expiry::Retransmit));
        assert_eq!(r.deadline(), Some(t2 + Duration::from_secs(4)));
        assert!(matches!(
            r.expire(t2 + Duration::from_secs(4), &schedule),
            Expiry::GiveUp
        ));
        assert!(r.answers(0) && !r.answers(1));
    }

    #[test]
    fn responses_by_id() {
        let mut r = Responses::new(0);
        assert_eq!(r.classify(0), Incoming::New);
        assert_eq!(r.classify(1), Incoming::Stale);
        r.answered(0, CachedResponse::Plain(vec![vec![7]]));
        assert_eq!(r.classify(0), Incoming::Retransmitted);
        assert!(matches!(r.cached(), Some(CachedResponse::Plain(d)) if *d == [vec![7]]));
        assert_eq!(r.classify(1), Incoming::New);
        assert_eq!(r.classify(5), Incoming::Stale);
    }
}
