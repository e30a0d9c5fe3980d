//! Reading a packed aggregate straight into its Rust type, as serde_json would read its text.
//!
//! A key's aggregate is read at every input. Unpacking it to JSON text and parsing that text
//! again cost about 7 % of the processor's CPU (perf, processor-bench); this deserializer walks
//! the packed bytes once and gives the visitor what serde_json's deserializer gives it for the
//! same JSON: `u64` for unsigned integers, `i64` for negative ones that fit, `f64` otherwise,
//! borrowed strings, `null` as `None`, objects as maps (or structs), arrays as sequences, enums
//! as a string or a one-key object, and map keys that parse as numbers where the type wants
//! one. Anything it cannot read is an error, and the caller then takes the text path, so the
//! two can differ only if this one succeeds with another value: `pack_tests` compares them.

use std::sync::Arc;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{
    ARRAY, DECIMAL, INTERNED_VALUE, MAX_DEPTH, NAMES, NEGINT, NUMBER, OBJECT, PackError, TEXT,
    UINT, VALUES, get_varint, read_head, write_decimal,
};

/// Why packed bytes did not read as the wanted type (the caller falls back to the text path).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

impl de::Error for ReadError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl From<PackError> for ReadError {
    fn from(e: PackError) -> Self {
        Self(e.to_string())
    }
}

/// Reads what [`super::pack_json_near`] packed with the same `base` as a `T`.
pub fn from_packed_near<T: DeserializeOwned>(bytes: &[u8], base: i64) -> Result<T, ReadError> {
    let mut d = Reader {
        b: bytes,
        pos: 0,
        last: base as u64,
        depth: 0,
    };
    let v = T::deserialize(&mut d)?;
    if d.pos != bytes.len() {
        return Err(PackError::Malformed(d.pos).into());
    }
    Ok(v)
}

/// One value's head, read ahead of the visitor's choice.
enum Head<'de> {
    Uint(u64),
    NegInt(u64),
    Decimal { negative: bool, scale: usize },
    Text(&'de str),
    Number(&'de str),
    Array(u64),
    Object(u64),
    Null,
    Bool(bool),
    Interned(Arc<str>),
}

struct Reader<'de> {
    b: &'de [u8],
    pos: usize,
    /// The previous timestamp-like integer in document order (the packer's delta chain).
    last: u64,
    depth: u32,
}

impl<'de> Reader<'de> {
    fn str_at(&mut self, len: u64, at: usize) -> Result<&'de str, ReadError> {
        let len = usize::try_from(len).map_err(|_| PackError::Malformed(at))?;
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(len))
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or(PackError::Malformed(at))?;
        self.pos += len;
        Ok(s)
    }

    fn head(&mut self) -> Result<Head<'de>, ReadError> {
        let at = self.pos;
        let (major, arg) = read_head(self.b, &mut self.pos, &mut self.last)?;
        Ok(match major {
            UINT => Head::Uint(arg),
            NEGINT => Head::NegInt(arg),
            DECIMAL => {
                if arg >> 1 > 13 {
                    return Err(PackError::Malformed(at).into());
                }
                Head::Decimal {
                    negative: arg & 1 == 1,
                    scale: (arg >> 1) as usize,
                }
            }
            TEXT => Head::Text(self.str_at(arg, at)?),
            NUMBER => Head::Number(self.str_at(arg, at)?),
            ARRAY => Head::Array(arg),
            OBJECT => Head::Object(arg),
            _ => match arg {
                0 => Head::Null,
                1 => Head::Bool(false),
                2 => Head::Bool(true),
                INTERNED_VALUE => {
                    let id = u32::try_from(get_varint(self.b, &mut self.pos)?)
                        .map_err(|_| PackError::Malformed(at))?;
                    Head::Interned(VALUES.text(id).ok_or(PackError::Malformed(at))?)
                }
                _ => return Err(PackError::Malformed(at).into()),
            },
        })
    }

    /// Whether the next value is `null` (without consuming it).
    fn next_is_null(&self) -> bool {
        self.b.get(self.pos) == Some(&(super::SIMPLE << 5))
    }

    /// An object key: its text (interned or inline).
    fn key(&mut self) -> Result<Key<'de>, ReadError> {
        let at = self.pos;
        let id = get_varint(self.b, &mut self.pos)?;
        if id == 0 {
            let len = get_varint(self.b, &mut self.pos)?;
            return Ok(Key::Borrowed(self.str_at(len, at)?));
        }
        let id = u32::try_from(id).map_err(|_| PackError::Malformed(at))?;
        Ok(Key::Shared(NAMES.text(id).ok_or(PackError::Malformed(at))?))
    }

    fn enter(&mut self) -> Result<(), ReadError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PackError::Malformed(self.pos).into());
        }
        Ok(())
    }

    /// Gives the visitor the value whose head was just read.
    fn visit<V: Visitor<'de>>(&mut self, head: Head<'de>, v: V) -> Result<V::Value, ReadError> {
        match head {
            Head::Uint(n) => v.visit_u64(n),
            Head::NegInt(n) => match i64::try_from(n) {
                // -1 - n, within i64 exactly when n is.
                Ok(n) => v.visit_i64(-1 - n),
                // serde_json reads an integer below i64's range as a float (from its text).
                Err(_) => v.visit_f64((-1 - i128::from(n)).to_string().parse().unwrap_or(f64::NAN)),
            },
            Head::Decimal { negative, scale } => {
                let mantissa = get_varint(self.b, &mut self.pos)?;
                let mut s = String::with_capacity(24);
                write_decimal(&mut s, negative, scale, mantissa);
                v.visit_string(s)
            }
            Head::Text(s) => v.visit_borrowed_str(s),
            Head::Number(s) => {
                let n: serde_json::Number = s.parse().map_err(<ReadError as de::Error>::custom)?;
                if let Some(u) = n.as_u64() {
                    v.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    v.visit_i64(i)
                } else {
                    v.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Head::Array(n) => {
                self.enter()?;
                let out = v.visit_seq(Seq { r: self, left: n })?;
                self.depth -= 1;
                Ok(out)
            }
            Head::Object(n) => {
                self.enter()?;
                let out = v.visit_map(Map { r: self, left: n })?;
                self.depth -= 1;
                Ok(out)
            }
            Head::Null => v.visit_unit(),
            Head::Bool(b) => v.visit_bool(b),
            Head::Interned(s) => v.visit_str(&s),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
        let head = self.head()?;
        self.visit(head, v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
        if self.next_is_null() {
            self.pos += 1;
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, ReadError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ReadError> {
        match self.head()? {
            Head::Text(s) => v.visit_enum(s.into_deserializer()),
            Head::Interned(s) => v.visit_enum(s.to_string().into_deserializer()),
            Head::Decimal { negative, scale } => {
                let mantissa = get_varint(self.b, &mut self.pos)?;
                let mut s = String::new();
                write_decimal(&mut s, negative, scale, mantissa);
                v.visit_enum(s.into_deserializer())
            }
            Head::Object(1) => {
                self.enter()?;
                let out = v.visit_enum(Variant { r: self })?;
                self.depth -= 1;
                Ok(out)
            }
            _ => Err(de::Error::custom("expected an enum")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
        // Walked, not skipped: the timestamps' delta chain runs through every value.
        de::Deserializer::deserialize_any(&mut *self, de::IgnoredAny)?;
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Seq<'a, 'de> {
    r: &'a mut Reader<'de>,
    left: u64,
}

impl<'de> SeqAccess<'de> for Seq<'_, 'de> {
    type Error = ReadError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ReadError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.r).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok().map(|n| n.min(4096))
    }
}

impl Drop for Seq<'_, '_> {
    fn drop(&mut self) {
        // A visitor that stopped early leaves members unread: make the position check fail.
        if self.left > 0 {
            self.r.pos = usize::MAX;
        }
    }
}

struct Map<'a, 'de> {
    r: &'a mut Reader<'de>,
    left: u64,
}

impl<'de> MapAccess<'de> for Map<'_, 'de> {
    type Error = ReadError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ReadError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let key = self.r.key()?;
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, ReadError> {
        seed.deserialize(&mut *self.r)
    }

    fn size_hint(&self) -> Option<usize> {
        usize::try_from(self.left).ok().map(|n| n.min(4096))
    }
}

impl Drop for Map<'_, '_> {
    fn drop(&mut self) {
        if self.left > 0 {
            self.r.pos = usize::MAX;
        }
    }
}

/// `{"Variant": value}`.
struct Variant<'a, 'de> {
    r: &'a mut Reader<'de>,
}

impl<'a, 'de> EnumAccess<'de> for Variant<'a, 'de> {
    type Error = ReadError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), ReadError> {
        let key = self.r.key()?;
        Ok((seed.deserialize(key)?, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, 'de> {
    type Error = ReadError;

    fn unit_variant(self) -> Result<(), ReadError> {
        de::Deserialize::deserialize(&mut *self.r)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ReadError> {
        seed.deserialize(&mut *self.r)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value, ReadError> {
        de::Deserializer::deserialize_seq(&mut *self.r, v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ReadError> {
        de::Deserializer::deserialize_map(&mut *self.r, v)
    }
}

/// An object key, read as serde_json reads its `"…"` key: a string, or a number or boolean
/// where the type wants one (`BTreeMap<u64, _>`).
enum Key<'de> {
    Borrowed(&'de str),
    Shared(Arc<str>),
}

impl Key<'_> {
    fn text(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Shared(s) => s,
        }
    }

    fn parse<T: std::str::FromStr>(&self) -> Result<T, ReadError> {
        self.text()
            .parse()
            .map_err(|_| de::Error::custom(format!("map key {:?} is not a number", self.text())))
    }
}

macro_rules! numeric_keys {
    ($($method:ident => $visit:ident: $t:ty),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
            v.$visit(self.parse::<$t>()?)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = ReadError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
        match self {
            Key::Borrowed(s) => v.visit_borrowed_str(s),
            Key::Shared(s) => v.visit_str(&s),
        }
    }

    numeric_keys! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
        deserialize_f32 => visit_f32: f32,
        deserialize_f64 => visit_f64: f64,
        deserialize_bool => visit_bool: bool,
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, ReadError> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, ReadError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, ReadError> {
        v.visit_enum(self.text().to_owned().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

#[cfg(test)]
#[path = "pack_de_tests.rs"]
mod tests;
