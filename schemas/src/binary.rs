//! A reader of Avro's binary encoding for the hot decode paths that know their writer schema.
//!
//! The generic path (`apache_avro` into a `Value`, then into the Rust type) allocates a name
//! and a value per field; a record type whose current schema is fixed can read its datum
//! straight into its fields instead. Every method returns `None` on malformed input; callers
//! then fall back to the generic path, which reports the error as it always has.

/// A cursor over one datum (Avro specification, "Binary Encoding").
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// `long` (and `int`): a zig-zag varint of at most 10 bytes.
    pub(crate) fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        for (i, b) in self.bytes.iter().take(10).enumerate() {
            if i == 9 && *b > 1 {
                return None; // more than 64 bits
            }
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                // Zig-zag: 0, -1, 1, -2, ...
                return Some((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        None
    }

    /// `bytes`: a length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.long()?).ok()?;
        if len > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Some(head)
    }

    /// `string`: `bytes` holding UTF-8.
    pub(crate) fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }

    /// A union's branch index.
    pub(crate) fn branch(&mut self) -> Option<i64> {
        self.long()
    }

    /// `["null", T]`: `None` for null, `Some(read)` for the second branch.
    pub(crate) fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.branch()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }
}
