//! The writer: values in the one deterministic encoding (RFC 8949 section 4.2.1), the encoding
//! the deterministic reader accepts. Integers and lengths take their shortest form, lengths are
//! definite, and a map's keys are sorted by their encodings.

/// A value to encode. It borrows what it encodes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// An unsigned integer.
    Uint(u64),
    /// A byte string.
    Bytes(&'a [u8]),
    /// A text string.
    Text(&'a str),
    /// `false` or `true`.
    Bool(bool),
    /// `null`.
    Null,
    /// An array.
    Array(Vec<Value<'a>>),
    /// A map.
    Map(Map<'a>),
}

/// A map key: text or an unsigned integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    /// A text key.
    Text(&'a str),
    /// An unsigned integer key.
    Uint(u64),
}

/// A map, encoded with its keys in deterministic order whatever order they were inserted in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Map<'a> {
    entries: Vec<(Key<'a>, Value<'a>)>,
}

impl<'a> Map<'a> {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: impl Into<Key<'a>>, value: impl Into<Value<'a>>) -> &mut Self {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.entries.push((key, value)),
        }
        self
    }

    /// The map with `key` set to `value`.
    #[must_use]
    pub fn with(mut self, key: impl Into<Key<'a>>, value: impl Into<Value<'a>>) -> Self {
        self.insert(key, value);
        self
    }

    /// The map's deterministic encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_map(&mut out, self);
        out
    }
}

impl<'a> From<&'a str> for Key<'a> {
    fn from(key: &'a str) -> Self {
        Key::Text(key)
    }
}

impl From<u64> for Key<'_> {
    fn from(key: u64) -> Self {
        Key::Uint(key)
    }
}

impl From<u64> for Value<'_> {
    fn from(n: u64) -> Self {
        Value::Uint(n)
    }
}

impl From<u32> for Value<'_> {
    fn from(n: u32) -> Self {
        Value::Uint(u64::from(n))
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Value::Bytes(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Value<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        Value::Bytes(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Value::Bytes(bytes)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(text: &'a str) -> Self {
        Value::Text(text)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(text: &'a String) -> Self {
        Value::Text(text)
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<'a> From<Map<'a>> for Value<'a> {
    fn from(map: Map<'a>) -> Self {
        Value::Map(map)
    }
}

impl<'a> From<Vec<Value<'a>>> for Value<'a> {
    fn from(items: Vec<Value<'a>>) -> Self {
        Value::Array(items)
    }
}

/// `value`'s deterministic encoding.
#[must_use]
pub fn encode(value: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

fn write_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let major = major << 5;
    if let Ok(small @ 0..=23) = u8::try_from(arg) {
        out.push(major | small);
    } else if let Ok(n) = u8::try_from(arg) {
        out.push(major | 24);
        out.push(n);
    } else if let Ok(n) = u16::try_from(arg) {
        out.push(major | 25);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = u32::try_from(arg) {
        out.push(major | 26);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn write_key(out: &mut Vec<u8>, key: Key<'_>) {
    match key {
        Key::Text(text) => write_value(out, &Value::Text(text)),
        Key::Uint(n) => write_value(out, &Value::Uint(n)),
    }
}

fn write_map(out: &mut Vec<u8>, map: &Map<'_>) {
    let mut entries: Vec<(Vec<u8>, &Value<'_>)> = map
        .entries
        .iter()
        .map(|(key, value)| {
            let mut encoded = Vec::new();
            write_key(&mut encoded, *key);
            (encoded, value)
        })
        .collect();
    entries.sort_by(|(a, _), (b, _)| a.cmp(b));
    write_head(out, 5, len(entries.len()));
    for (key, value) in entries {
        out.extend_from_slice(&key);
        write_value(out, value);
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Uint(n) => write_head(out, 0, *n),
        Value::Bytes(bytes) => {
            write_head(out, 2, len(bytes.len()));
            out.extend_from_slice(bytes);
        }
        Value::Text(text) => {
            write_head(out, 3, len(text.len()));
            out.extend_from_slice(text.as_bytes());
        }
        Value::Array(items) => {
            write_head(out, 4, len(items.len()));
            for item in items {
                write_value(out, item);
            }
        }
        Value::Map(map) => write_map(out, map),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
    }
}
