//! The anti-replay window of RFC 4303 §3.4.3, with extended sequence numbers as in
//! Appendix A2. A packet is checked before decryption ([`ReplayWindow::check`]) and the
//! window moves only after it authenticated ([`ReplayWindow::accept`]).

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("sequence number already seen")]
    Duplicate,
    #[error("sequence number left of the window")]
    TooOld,
    #[error("sequence number 0 is never sent")]
    Zero,
}

/// A sliding bitmap over the highest sequence numbers seen.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number (full 64 bits); 0 before the first packet.
    top: u64,
    /// Ring of seen bits, indexed by sequence number modulo the window size.
    bits: Box<[u64]>,
    esn: bool,
}

impl ReplayWindow {
    /// A window of at least `size` packets (rounded up to a multiple of 64, minimum 64).
    pub fn new(size: u32, esn: bool) -> Self {
        let words = (size.max(64) as usize).div_ceil(64);
        Self {
            top: 0,
            bits: vec![0; words].into_boxed_slice(),
            esn,
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Infers the full sequence number of a received low half and checks it against the
    /// window. The result is what the ICV must be computed over.
    pub fn check(&self, seq_lo: u32) -> Result<u64, ReplayError> {
        let seq = if self.esn {
            self.infer(seq_lo).ok_or(ReplayError::TooOld)?
        } else {
            u64::from(seq_lo)
        };
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(seq);
        }
        if self.top - seq >= self.size() {
            return Err(ReplayError::TooOld);
        }
        if self.bit(seq) {
            Err(ReplayError::Duplicate)
        } else {
            Ok(seq)
        }
    }

    /// Records an authenticated sequence number; re-checks it, since another packet may
    /// have been accepted between [`check`](Self::check) and now.
    pub fn accept(&mut self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= self.size() {
                self.bits.fill(0);
            } else {
                for s in self.top + 1..seq {
                    self.set_bit(s, false);
                }
            }
            self.top = seq;
        } else if self.top - seq >= self.size() {
            return Err(ReplayError::TooOld);
        } else if self.bit(seq) {
            return Err(ReplayError::Duplicate);
        }
        self.set_bit(seq, true);
        Ok(())
    }

    /// RFC 4303 Appendix A2.2: choose the high half that puts the packet nearest the window.
    fn infer(&self, seq_lo: u32) -> Option<u64> {
        let w = self.size().min(1 << 31) as u32;
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let bottom = tl.wrapping_sub(w - 1);
        let hi = if tl >= w - 1 {
            // Case A: the window lies within one subspace.
            if seq_lo >= bottom {
                Some(th)
            } else {
                th.checked_add(1)
            }
        } else if seq_lo >= bottom {
            // Case B: the window straddles a subspace boundary; a number at its bottom
            // end belongs to the previous subspace.
            th.checked_sub(1)
        } else {
            Some(th)
        };
        hi.map(|h| u64::from(h) << 32 | u64::from(seq_lo))
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq % self.size()) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_bit(&mut self, seq: u64, on: bool) {
        let i = (seq % self.size()) as usize;
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(w: &mut ReplayWindow, lo: u32) -> Result<u64, ReplayError> {
        let seq = w.check(lo)?;
        w.accept(seq)?;
        Ok(seq)
    }

    #[test]
    fn first_packet_and_zero() {
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(w.size(), 1024);
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        assert_eq!(recv(&mut w, 1), Ok(1));
        assert_eq!(recv(&mut w, 1), Err(ReplayError::Duplicate));
        // A first packet far ahead is fine too; everything a window behind it is not.
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(recv(&mut w, 5000), Ok(5000));
        assert_eq!(w.check(5000 - 1024), Err(ReplayError::TooOld));
        assert_eq!(w.check(5000 - 1023), Ok(5000 - 1023));
    }

    #[test]
    fn slide_edge_old_duplicate_and_jump() {
        let mut w = ReplayWindow::new(1024, false);
        for s in 1..=2000 {
            recv(&mut w, s).unwrap();
        }
        assert_eq!(w.top(), 2000);
        // Exactly at the edge: top - (size - 1) is the oldest number still inside.
        assert_eq!(w.check(2000 - 1023), Err(ReplayError::Duplicate));
        assert_eq!(w.check(2000 - 1024), Err(ReplayError::TooOld));
        // Out of order inside the window after a gap.
        assert_eq!(recv(&mut w, 2010), Ok(2010));
        assert_eq!(recv(&mut w, 2005), Ok(2005));
        assert_eq!(recv(&mut w, 2005), Err(ReplayError::Duplicate));
        assert_eq!(recv(&mut w, 2001), Ok(2001));
        assert_eq!(w.check(2002), Ok(2002));
        // A jump of more than a window clears everything behind it.
        assert_eq!(recv(&mut w, 100_000), Ok(100_000));
        assert_eq!(w.check(2002), Err(ReplayError::TooOld));
        assert_eq!(w.check(100_000 - 1023), Ok(100_000 - 1023));
        assert_eq!(w.check(99_999), Ok(99_999));
        // A jump of less than a window keeps the bits still inside it.
        recv(&mut w, 99_500).unwrap();
        recv(&mut w, 100_500).unwrap();
        assert_eq!(w.check(99_500), Err(ReplayError::Duplicate));
        assert_eq!(w.check(99_501), Ok(99_501));
        assert_eq!(w.check(100_000), Err(ReplayError::Duplicate));
    }

    #[test]
    fn check_does_not_move_the_window() {
        let mut w = ReplayWindow::new(64, false);
        recv(&mut w, 10).unwrap();
        // A forged packet far ahead that fails authentication must not slide the window.
        assert_eq!(w.check(1_000_000), Ok(1_000_000));
        assert_eq!(w.top(), 10);
        assert_eq!(recv(&mut w, 9), Ok(9));
        // Two packets with the same number passing check before either is accepted.
        let a = w.check(11).unwrap();
        let b = w.check(11).unwrap();
        w.accept(a).unwrap();
        assert_eq!(w.accept(b), Err(ReplayError::Duplicate));
    }

    #[test]
    fn esn_crosses_the_32_bit_boundary() {
        let mut w = ReplayWindow::new(1024, true);
        let near = u64::from(u32::MAX) - 10;
        // Stand in for the 2^32 - 11 packets before this one.
        w.accept(near).unwrap();
        // Case A: below the window's bottom means the next subspace.
        assert_eq!(recv(&mut w, 3), Ok((1 << 32) | 3));
        // Case B: the window now straddles the boundary; high numbers are the old subspace.
        assert_eq!(recv(&mut w, u32::MAX - 2), Ok(u64::from(u32::MAX) - 2));
        assert_eq!(w.check(near as u32), Err(ReplayError::Duplicate));
        assert_eq!(recv(&mut w, 1), Ok((1 << 32) | 1));
        assert_eq!(w.check(5), Ok((1 << 32) | 5));
        // Below the straddling window, a low half is read as ahead in the current
        // subspace (Appendix A2.2); authentication then decides.
        assert_eq!(
            w.check(u32::MAX - 2000),
            Ok((1 << 32) | u64::from(u32::MAX - 2000))
        );
        // Without ESN, the same low number is just an old 32-bit number.
        let mut plain = ReplayWindow::new(1024, false);
        recv(&mut plain, u32::MAX - 10).unwrap();
        assert_eq!(plain.check(3), Err(ReplayError::TooOld));
    }

    #[test]
    fn esn_at_the_start_never_underflows() {
        let mut w = ReplayWindow::new(1024, true);
        recv(&mut w, 5).unwrap();
        // Case B with high half 0: a number "from the previous subspace" cannot exist.
        assert_eq!(w.check(u32::MAX), Err(ReplayError::TooOld));
        assert_eq!(w.check(6), Ok(6));
    }

    #[test]
    fn window_rounds_up() {
        assert_eq!(ReplayWindow::new(0, false).size(), 64);
        assert_eq!(ReplayWindow::new(100, false).size(), 128);
        assert_eq!(ReplayWindow::new(4096, true).size(), 4096);
    }
}
