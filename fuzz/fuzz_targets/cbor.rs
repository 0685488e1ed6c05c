#![no_main]
// Any bytes, through the one CBOR reader in both profiles with a schema of every item kind: a
// value or an error, never a panic; what the deterministic profile reads, the writer writes back
// byte for byte (one encoding per value).
use cbor::{Error, Map, Profile, Reader, Value};

fn read<'a>(r: &mut Reader<'a>) -> Result<Map<'a>, Error> {
    let mut out = Map::new();
    let mut map = r.map()?;
    while let Some(key) = map.key(&["u", "b", "t", "n", "a", "m"])? {
        let r = map.value();
        let value = match key {
            "u" => Value::Uint(r.uint()?),
            "b" => Value::Bytes(r.bytes()?),
            "t" => Value::Text(r.text()?),
            "n" => r.nullable(|r| r.bool())?.map_or(Value::Null, Value::Bool),
            "a" => {
                let n = r.array(16)?;
                Value::Array(
                    (0..n)
                        .map(|_| r.uint().map(Value::Uint))
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => {
                let mut inner = Map::new();
                let mut entries = r.map()?;
                while let Some(k) = entries.uint_key()? {
                    inner.insert(k, entries.value().bytes()?);
                }
                Value::Map(inner)
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = Reader::read_all(data, 1 << 16, Profile::Document, read);
    if let Ok(map) = Reader::read_all(data, 1 << 16, Profile::Deterministic, read) {
        assert_eq!(map.encode(), data);
    }
});
