//! Bounds-checked reading and length patching. Every parser in `wire` reads through a
//! [`Reader`], so a short buffer is an error and never an out-of-bounds access.

/// Why a payload body could not be read or written; the chain parser attaches the payload
/// type.
pub(super) type Reason = &'static str;

pub(super) const TRUNCATED: Reason = "truncated";

#[derive(Clone, Copy)]
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], Reason> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(TRUNCATED)?;
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], Reason> {
        self.take(N)?.try_into().map_err(|_| TRUNCATED)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Reason> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, Reason> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, Reason> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A substructure whose length field (counting the `header_read` bytes already
    /// consumed) is `length`: returns a reader over the rest of it.
    pub(super) fn nested(&mut self, length: u16, header_read: usize) -> Result<Self, Reason> {
        let rest = usize::from(length)
            .checked_sub(header_read)
            .ok_or("length field shorter than its header")?;
        Ok(Self(self.take(rest)?))
    }

    pub(super) fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Writes the length of `out[start..]` as a big-endian u16 at `out[at..at + 2]`.
pub(super) fn patch_u16_len(out: &mut [u8], start: usize, at: usize) -> Result<(), Reason> {
    let len = out
        .len()
        .checked_sub(start)
        .ok_or("length start past end")?;
    let len = u16::try_from(len).map_err(|_| "longer than 65535 bytes")?;
    let field = out.get_mut(at..at + 2).ok_or("length field past end")?;
    field.copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A length that must fit a u8 or u16 count field.
pub(super) fn count<T: TryFrom<usize>>(n: usize) -> Result<T, Reason> {
    T::try_from(n).map_err(|_| "too many entries")
}
