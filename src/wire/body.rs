//! Request bodies as the daemon reads them: exactly one JSON object, nothing
//! after it, decoded into one of this module's request types, with the
//! field at fault named. A body that is not JSON, has trailing data, or is
//! an array where an object belongs is malformed (400); a well-formed object
//! with a missing or unknown field is refused by the contract (422).
//!
//! serde's derive reads a struct from a JSON array too (its fields in
//! order), so the request types do not use the derived `Deserialize`
//! directly: [`objects_only!`] keeps the derived code (as inherent
//! functions, `#[serde(remote = "Self")]`) and gives each type a
//! `Deserialize` that asks for a map and nothing else. Observation batches
//! are decoded by hand (`observation.rs`) so their limits hold while
//! parsing.

use std::marker::PhantomData;

use serde::de::{DeserializeOwned, MapAccess, Visitor};

use super::Refusal;

/// A request type read only from a JSON object: its derived code behind
/// [`objects_only!`].
pub trait FromObject: Sized {
    fn from_object<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// The visitor that accepts a map and refuses everything else ("invalid
/// type: sequence, expected a JSON object").
pub struct ObjectOnly<T>(PhantomData<T>);

impl<T> Default for ObjectOnly<T> {
    fn default() -> Self {
        ObjectOnly(PhantomData)
    }
}

impl<'de, T: FromObject> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(map)
    }
}

/// `Serialize` and an objects-only `Deserialize` for types that derive
/// both with `#[serde(remote = "Self")]` (which makes the derived code
/// inherent functions instead of the trait impls).
macro_rules! objects_only {
    ($($t:ty),* $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$t>::serialize(self, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map($crate::wire::body::ObjectOnly::<$t>::default())
            }
        }

        impl $crate::wire::body::FromObject for $t {
            fn from_object<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                <$t>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
    )*};
}
pub(crate) use objects_only;

/// Decode a whole request body as a `T`: one JSON value, then only
/// whitespace. Errors name the field (`events[3].latency_ms`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Refusal::malformed("", "expected a JSON object body"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| refusal(&e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| {
        Refusal::malformed(
            "",
            format!("expected nothing after the JSON object, found more: {e}"),
        )
    })?;
    Ok(value)
}

/// A decoding error as the API answers it: a well-formed object with a
/// field missing or unknown is refused by the contract (422, naming that
/// field); malformed JSON, wrong types and duplicate keys are 400.
pub(crate) fn refusal(path: &str, e: &serde_json::Error) -> Refusal {
    let path = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    let message = e.to_string();
    for kind in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(kind)
            && let Some(name) = rest.split('`').next()
        {
            // serde_path_to_error's path already ends at an unknown
            // field; a missing one is named below the path.
            let field = if path.is_empty() {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                format!("{path}.{name}")
            };
            return Refusal::invalid(field, message);
        }
    }
    Refusal::malformed(path, message)
}
