//! A reader and a writer of Avro's binary encoding for the hot paths that know their schema.
//!
//! The generic path (`apache_avro` through a `Value`) allocates a name and a value per field
//! and clones every string; a record type whose current schema is fixed can read its datum
//! straight into its fields, and write it straight from them. Every reader method returns
//! `None` on malformed input; callers then fall back to the generic path, which reports the
//! error as it always has. Each record type's tests compare both directions with the generic
//! path, so a schema change without a change here fails them.

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

    /// `string`: `bytes` holding UTF-8, borrowed from the datum.
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
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

/// A single-object encoding (`C3 01`, the schema's fingerprint, the datum) written field by
/// field in the schema's order.
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// Starts a record of the schema whose Rabin fingerprint is `fingerprint`.
    pub(crate) fn single_object(fingerprint: u64, capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity + 10);
        out.extend_from_slice(&crate::codec::MAGIC);
        out.extend_from_slice(&fingerprint.to_le_bytes());
        Self { out }
    }

    /// `long` (and `int`): zig-zag, then a varint.
    pub(crate) fn long(&mut self, v: i64) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        while n >= 0x80 {
            self.out.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    /// `boolean`: one byte.
    pub(crate) fn boolean(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    /// `bytes`: a length, then the bytes.
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.long(i64::try_from(b.len()).unwrap_or(i64::MAX));
        self.out.extend_from_slice(b);
    }

    /// `string`: `bytes` holding UTF-8.
    pub(crate) fn string(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// `["null", T]`.
    pub(crate) fn nullable<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                write(self, v);
            }
        }
    }

    /// An array in one block (as `apache_avro` writes it): the count, the items, then the
    /// empty block that ends it.
    pub(crate) fn array<T>(&mut self, items: &[T], mut write: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.long(i64::try_from(items.len()).unwrap_or(i64::MAX));
            for item in items {
                write(self, item);
            }
        }
        self.long(0);
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}
