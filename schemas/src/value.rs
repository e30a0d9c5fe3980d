//! Small helpers to read resolved Avro `Value`s field by field with clear errors.

use apache_avro::types::Value;

use crate::codec::CodecError;

/// A decoded record's fields, taken out by name.
pub(crate) struct Fields {
    record: &'static str,
    fields: Vec<(String, Value)>,
}

impl Fields {
    pub(crate) fn new(record: &'static str, value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Record(fields) => Ok(Self { record, fields }),
            other => Err(shape(record, "record", &other)),
        }
    }

    fn take(&mut self, name: &'static str) -> Result<Value, CodecError> {
        let pos = self
            .fields
            .iter()
            .position(|(n, _)| n == name)
            .ok_or(CodecError::Shape {
                record: self.record,
                field: name,
                expected: "present",
            })?;
        Ok(std::mem::replace(&mut self.fields[pos].1, Value::Null))
    }

    pub(crate) fn string(&mut self, name: &'static str) -> Result<String, CodecError> {
        let record = self.record;
        into_string(self.take(name)?).ok_or(CodecError::Shape {
            record,
            field: name,
            expected: "string",
        })
    }

    pub(crate) fn opt_string(&mut self, name: &'static str) -> Result<Option<String>, CodecError> {
        let record = self.record;
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            v => into_string(v).map(Some).ok_or(CodecError::Shape {
                record,
                field: name,
                expected: "string or null",
            }),
        }
    }

    pub(crate) fn long(&mut self, name: &'static str) -> Result<i64, CodecError> {
        let record = self.record;
        match unwrap_union(self.take(name)?) {
            Value::Long(v) => Ok(v),
            Value::Int(v) => Ok(i64::from(v)),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "long",
            }),
        }
    }

    pub(crate) fn opt_long(&mut self, name: &'static str) -> Result<Option<i64>, CodecError> {
        let record = self.record;
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            Value::Long(v) => Ok(Some(v)),
            Value::Int(v) => Ok(Some(i64::from(v))),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "long or null",
            }),
        }
    }

    pub(crate) fn boolean(&mut self, name: &'static str) -> Result<bool, CodecError> {
        let record = self.record;
        match self.take(name)? {
            Value::Boolean(b) => Ok(b),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "boolean",
            }),
        }
    }

    pub(crate) fn bytes(&mut self, name: &'static str) -> Result<Vec<u8>, CodecError> {
        let record = self.record;
        match self.take(name)? {
            Value::Bytes(b) => Ok(b),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "bytes",
            }),
        }
    }

    pub(crate) fn enum_symbol(&mut self, name: &'static str) -> Result<String, CodecError> {
        let record = self.record;
        match self.take(name)? {
            Value::Enum(_, s) => Ok(s),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "enum",
            }),
        }
    }

    pub(crate) fn array(&mut self, name: &'static str) -> Result<Vec<Value>, CodecError> {
        let record = self.record;
        match self.take(name)? {
            Value::Array(items) => Ok(items),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "array",
            }),
        }
    }

    pub(crate) fn opt_long_array(
        &mut self,
        name: &'static str,
    ) -> Result<Option<Vec<i64>>, CodecError> {
        let record = self.record;
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Long(l) => Ok(l),
                    _ => Err(CodecError::Shape {
                        record,
                        field: name,
                        expected: "array of long",
                    }),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(CodecError::Shape {
                record,
                field: name,
                expected: "array or null",
            }),
        }
    }

    pub(crate) fn strings(&mut self, name: &'static str) -> Result<Vec<String>, CodecError> {
        let record = self.record;
        self.array(name)?
            .into_iter()
            .map(|v| {
                into_string(v).ok_or(CodecError::Shape {
                    record,
                    field: name,
                    expected: "array of string",
                })
            })
            .collect()
    }

    /// The raw value, for unions and nested records the caller decodes itself.
    pub(crate) fn raw(&mut self, name: &'static str) -> Result<Value, CodecError> {
        self.take(name)
    }
}

fn into_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Strips a union wrapper; resolved values of `["null", T]` fields arrive as `Union(i, v)`.
pub(crate) fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn shape(record: &'static str, expected: &'static str, _got: &Value) -> CodecError {
    CodecError::Shape {
        record,
        field: "",
        expected,
    }
}

/// `["null", "string"]` as a union value (the generic encodings in tests).
#[cfg(test)]
pub(crate) fn opt_string(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

/// `["null", "long"]` as a union value (the generic encodings in tests).
#[cfg(test)]
pub(crate) fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(l) => Value::Union(1, Box::new(Value::Long(l))),
    }
}

/// `["null", {"type":"array","items":"long"}]` as a union value (the generic encodings in
/// tests).
#[cfg(test)]
pub(crate) fn opt_long_array(v: &Option<Vec<i64>>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(items) => Value::Union(
            1,
            Box::new(Value::Array(
                items.iter().map(|l| Value::Long(*l)).collect(),
            )),
        ),
    }
}

/// An array of strings.
pub(crate) fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// Builds a record value from `(name, value)` pairs.
pub(crate) fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}
