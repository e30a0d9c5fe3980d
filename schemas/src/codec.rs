//! Avro single-object encoding with a table of every released schema version.
//!
//! Framing (Avro specification, "Single-object encoding"): two marker bytes `C3 01`, the 8-byte
//! little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's canonical form, then the
//! binary datum. A reader looks the fingerprint up among the schema versions it knows (the
//! current one plus everything under `schemas/avro/released/`) and resolves the datum into the
//! current schema, so records written by older releases stay readable during replays.

use std::cell::RefCell;

use apache_avro::{
    GenericSingleObjectReader, GenericSingleObjectWriter, Schema, rabin::Rabin, types::Value,
};

/// The two marker bytes that start every single-object encoded record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not start with the single-object marker or are too short.
    #[error("not an Avro single-object record ({len} bytes, header {header:02x?})")]
    NotSingleObject {
        /// Length of the input.
        len: usize,
        /// Its first bytes.
        header: Vec<u8>,
    },
    /// The writer schema's fingerprint is not one of the versions this build knows.
    #[error("unknown writer schema fingerprint {0:016x} for {1}")]
    UnknownSchema(u64, &'static str),
    /// Avro itself failed (truncated datum, wrong value shape, resolution failure).
    #[error("avro error for {schema}: {source}")]
    Avro {
        /// Which schema.
        schema: &'static str,
        /// The library's error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// A decoded value did not have the shape the Rust type expects.
    #[error("record {record}: field {field:?} is not {expected}")]
    Shape {
        /// Record name.
        record: &'static str,
        /// Field name.
        field: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A JSON text field (dataFields, aggregate) is not valid JSON of the expected shape.
    #[error("record {record}: JSON field {field:?}: {message}")]
    Json {
        /// Record name.
        record: &'static str,
        /// Field name.
        field: &'static str,
        /// serde_json's message.
        message: String,
    },
    /// A decimal text field is not a decimal number.
    #[error("record {record}: field {field:?} is not a decimal: {value:?}")]
    Decimal {
        /// Record name.
        record: &'static str,
        /// Field name.
        field: &'static str,
        /// The text.
        value: String,
    },
}

/// One topic's schema: the current version and the fingerprints of every version it can read.
pub struct Codec {
    name: &'static str,
    current: Schema,
    current_fingerprint: u64,
    known: Vec<Version>,
    /// Decode older versions in their writer's shape instead of resolving them into the
    /// current schema (see [`Codec::writer_shaped`]).
    writer_shaped: bool,
}

/// A schema version this build can read.
struct Version {
    fingerprint: u64,
    schema: Schema,
    /// Reads the version in its own shape with its names resolved once: `from_avro_datum`
    /// resolves the writer schema on every call, which cost more than the decoding itself.
    reader: GenericSingleObjectReader,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("name", &self.name)
            .field("current_fingerprint", &self.current_fingerprint)
            .field("known", &self.known.len())
            .field("writer_shaped", &self.writer_shaped)
            .finish_non_exhaustive()
    }
}

fn fingerprint(schema: &Schema) -> u64 {
    let fp = schema.fingerprint::<Rabin>();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&fp.bytes[..8]);
    u64::from_le_bytes(bytes)
}

impl Codec {
    /// Builds a codec from the current schema text and the texts of released versions.
    ///
    /// The texts are compiled into the binary with `include_str!`, so a parse failure is a
    /// build defect caught by this crate's tests, never a runtime input problem.
    pub(crate) fn new(name: &'static str, current: &str, released: &[&str]) -> Self {
        #[allow(clippy::expect_used)] // Embedded schema text; covered by tests.
        let parse = |text: &str| Schema::parse_str(text).expect("embedded Avro schema must parse");
        let current = parse(current);
        let current_fingerprint = fingerprint(&current);
        #[allow(clippy::expect_used)] // The same embedded schema texts, parsed above.
        let version = |fingerprint: u64, schema: Schema| Version {
            fingerprint,
            reader: GenericSingleObjectReader::new(schema.clone())
                .expect("embedded Avro schema must resolve"),
            schema,
        };
        let mut known = vec![version(current_fingerprint, current.clone())];
        for text in released {
            let s = parse(text);
            let fp = fingerprint(&s);
            if !known.iter().any(|v| v.fingerprint == fp) {
                known.push(version(fp, s));
            }
        }
        Self {
            name,
            current,
            current_fingerprint,
            known,
            writer_shaped: false,
        }
    }

    /// Decodes older versions in the writer's shape. apache-avro resolves a union branch into
    /// the first reader branch the value fits, not the branch of the same name: a v1
    /// `TrackPurchase` read with the v2 command schema came out as an `UpsertUser`. A schema
    /// that evolves only by appending union branches (so branch indexes keep their meaning)
    /// and whose Rust decoder reads fields by name can skip the resolution entirely.
    pub(crate) fn writer_shaped(mut self) -> Self {
        self.writer_shaped = true;
        self
    }

    /// The schema's name, for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current (writer and reader) schema.
    pub fn schema(&self) -> &Schema {
        &self.current
    }

    /// Fingerprint of the current schema.
    pub fn fingerprint(&self) -> u64 {
        self.current_fingerprint
    }

    /// Every schema version this build can read, current first.
    pub fn known_schemas(&self) -> impl Iterator<Item = &Schema> {
        self.known.iter().map(|v| &v.schema)
    }

    fn avro(&self, source: apache_avro::Error) -> CodecError {
        CodecError::Avro {
            schema: self.name,
            source: Box::new(source),
        }
    }

    /// Encodes a value with the current schema, framed as a single object (the library's
    /// single-object writer writes the same `C3 01` + fingerprint header). Each thread keeps
    /// one writer per schema, its names resolved once: `to_avro_datum` resolved the schema
    /// twice per record (validation and encoding).
    pub(crate) fn encode_value(&self, value: Value) -> Result<Vec<u8>, CodecError> {
        thread_local! {
            // Keyed by the schema's fingerprint, not the codec's name: a test may build a
            // codec of the same name with another schema.
            static WRITERS: RefCell<Vec<(u64, GenericSingleObjectWriter)>> =
                const { RefCell::new(Vec::new()) };
        }
        let fp = self.current_fingerprint;
        WRITERS.with(|writers| {
            let mut writers = writers.borrow_mut();
            let i = match writers.iter().position(|(k, _)| *k == fp) {
                Some(i) => i,
                None => {
                    let w = GenericSingleObjectWriter::new_with_capacity(&self.current, 1024)
                        .map_err(|e| self.avro(e))?;
                    writers.push((fp, w));
                    writers.len() - 1
                }
            };
            let mut out = Vec::with_capacity(256);
            writers[i]
                .1
                .write_value_ref(&value, &mut out)
                .map_err(|e| self.avro(e))?;
            Ok(out)
        })
    }

    /// Decodes a framed record written with any known version into the current schema.
    pub(crate) fn decode_value(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        if bytes.len() < 10 || bytes[..2] != MAGIC {
            return Err(CodecError::NotSingleObject {
                len: bytes.len(),
                header: bytes.iter().take(10).copied().collect(),
            });
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..10]);
        let fp = u64::from_le_bytes(fp);
        let writer = self
            .known
            .iter()
            .find(|v| v.fingerprint == fp)
            .ok_or(CodecError::UnknownSchema(fp, self.name))?;
        if fp == self.current_fingerprint || self.writer_shaped {
            // In the writer's shape (the header is checked again by the reader).
            let mut framed = bytes;
            return writer
                .reader
                .read_value(&mut framed)
                .map_err(|e| self.avro(e));
        }
        let mut datum = &bytes[10..];
        apache_avro::from_avro_datum(&writer.schema, &mut datum, Some(&self.current))
            .map_err(|e| self.avro(e))
    }
}
