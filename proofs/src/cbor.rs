//! The deterministic CBOR encoding (RFC 8949 section 4.2.1) of the text-keyed maps that entries
//! and receipt payloads are: ciborium writes shortest integers and definite lengths; this sorts
//! the keys by their encoded bytes (shorter keys first, then bytewise).

use ciborium::Value;

/// An unsigned integer.
pub fn uint(n: u64) -> Value {
    Value::Integer(n.into())
}

/// Encode a map with text keys in deterministic order.
pub fn encode_map(mut fields: Vec<(&'static str, Value)>) -> Result<Vec<u8>, String> {
    fields.sort_by(|(a, _), (b, _)| (a.len(), *a).cmp(&(b.len(), *b)));
    let map = Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_owned()), v))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}
