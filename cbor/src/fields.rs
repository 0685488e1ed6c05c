//! A map read in full, then taken apart field by field: for formats whose fields depend on a
//! value inside the same map (an operation, an entry type). The map's keys must come from the
//! format's list, each once; the caller then takes the fields its variant defines, and
//! [`Fields::finish`] refuses whatever is left, a field of the format that this variant does
//! not have.

use crate::error::{Error, ErrorKind};
use crate::read::Reader;

/// The fields of one map, each read by `read_value` into the caller's item type.
#[derive(Debug)]
pub struct Fields<T> {
    items: Vec<(&'static str, T)>,
}

impl<T> Fields<T> {
    /// Read a map whose keys are among `known`, each value with `read_value(key, reader)`.
    pub fn read<'a, E: From<Error>>(
        r: &mut Reader<'a>,
        known: &[&'static str],
        mut read_value: impl FnMut(&'static str, &mut Reader<'a>) -> Result<T, E>,
    ) -> Result<Self, E> {
        let mut items = Vec::new();
        let mut map = r.map()?;
        while let Some(key) = map.key(known)? {
            items.push((key, read_value(key, map.value())?));
        }
        Ok(Self { items })
    }

    /// The field `key`, if present.
    pub fn take(&mut self, key: &'static str) -> Option<T> {
        let index = self.items.iter().position(|(k, _)| *k == key)?;
        Some(self.items.swap_remove(index).1)
    }

    /// The field `key`, which must be present.
    pub fn need(&mut self, key: &'static str) -> Result<T, Error> {
        self.take(key).ok_or_else(|| Error::missing(key))
    }

    /// Nothing may be left once the variant has taken its fields.
    pub fn finish(self) -> Result<(), Error> {
        match self.items.first() {
            None => Ok(()),
            Some((key, _)) => Err(Error::new(
                ErrorKind::UnknownKey {
                    key: (*key).to_owned(),
                },
                None,
                None,
            )),
        }
    }
}
