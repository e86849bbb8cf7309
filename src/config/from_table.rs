//! Deserialising a typed value (an enum) from a table of optional keys,
//! with the check between keys done inside the table's own
//! deserialisation, so the parser locates an error at that table (not at
//! the array or table around it, as serde's `try_from` would).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Reads a table as `Table`, then converts it to `T`; `expecting` says what
/// the table should be.
pub(crate) fn from_table<'de, D, Table, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Table: Deserialize<'de>,
    T: TryFrom<Table, Error = String>,
{
    struct TableVisitor<Table, T> {
        expecting: &'static str,
        types: PhantomData<fn() -> (Table, T)>,
    }
    impl<'de, Table: Deserialize<'de>, T: TryFrom<Table, Error = String>> Visitor<'de> for TableVisitor<Table, T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let table = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            T::try_from(table).map_err(serde::de::Error::custom)
        }
    }
    deserializer.deserialize_map(TableVisitor {
        expecting,
        types: PhantomData,
    })
}
