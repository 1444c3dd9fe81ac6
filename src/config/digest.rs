//! A config file, pre-parsed: what a component embeds so that it never
//! parses TOML at run time (a WASI 0.2 instance would do it per request).
//! `build.rs` writes it with `digest_write.rs`; [`RawConfig`] is read from
//! it by the serde `Deserializer` here, which hands out `toml::Spanned`
//! values with the same spans the TOML deserializer would, so every later
//! error still names its line.
//!
//! The format: one value per node, `tag:u8 start:u32 end:u32` (the span in
//! the TOML text, little-endian) then, by tag: a string (`len:u32` + UTF-8),
//! an `i64`, an `f64`, a `u8` boolean, a datetime (as a string, which no
//! config key accepts), an array (`count:u32` + nodes) or a table
//! (`count:u32` + key string node, value node pairs). The root is a table.

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_spanned::de::{SpannedDeserializer, is_spanned};

use super::digest_write::{ARRAY, BOOL, DATETIME, FLOAT, INT, STR, TABLE};
use super::raw::RawConfig;

/// Why a digest could not be read (the caller then parses the TOML itself,
/// which explains any mistake in the file properly).
#[derive(Debug, thiserror::Error)]
#[error("config digest: {0}")]
pub(crate) struct DigestError(String);

impl de::Error for DigestError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        DigestError(msg.to_string())
    }
}

/// Reads a [`RawConfig`] from its digest.
pub(crate) fn read(digest: &[u8]) -> Result<RawConfig, DigestError> {
    let mut cursor = Cursor { bytes: digest, at: 0 };
    let raw = serde::Deserialize::deserialize(Node { cursor: &mut cursor })?;
    if cursor.at != digest.len() {
        return Err(DigestError("trailing bytes".into()));
    }
    Ok(raw)
}

struct Cursor<'de> {
    bytes: &'de [u8],
    at: usize,
}

impl<'de> Cursor<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8], DigestError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| DigestError("truncated".into()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DigestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<usize, DigestError> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn text(&mut self) -> Result<&'de str, DigestError> {
        let len = self.u32()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| DigestError("a string is not UTF-8".into()))
    }

    /// The next node's span, without moving.
    fn peek_span(&self) -> Result<std::ops::Range<usize>, DigestError> {
        let head = self.bytes.get(self.at + 1..self.at + 9).ok_or_else(|| DigestError("truncated".into()))?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]) as usize;
        Ok(word(0)..word(4))
    }

    /// The next node's tag, past its span.
    fn head(&mut self) -> Result<u8, DigestError> {
        let [tag] = self.array()?;
        self.take(8)?;
        Ok(tag)
    }
}

/// A deserializer for the next node.
struct Node<'c, 'de> {
    cursor: &'c mut Cursor<'de>,
}

impl<'de> IntoDeserializer<'de, DigestError> for Node<'_, 'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Node<'_, 'de> {
    type Error = DigestError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DigestError> {
        let c = self.cursor;
        match c.head()? {
            STR => visitor.visit_borrowed_str(c.text()?),
            INT => visitor.visit_i64(i64::from_le_bytes(c.array()?)),
            FLOAT => visitor.visit_f64(f64::from_le_bytes(c.array()?)),
            BOOL => visitor.visit_bool(c.array::<1>()?[0] != 0),
            DATETIME => Err(de::Error::invalid_type(de::Unexpected::Other(c.text()?), &visitor)),
            ARRAY => {
                let left = c.u32()?;
                visitor.visit_seq(Items { cursor: c, left })
            }
            TABLE => {
                let left = c.u32()?;
                visitor.visit_map(Items { cursor: c, left })
            }
            tag => Err(DigestError(format!("unknown tag {tag}"))),
        }
    }

    /// A value that is present is `Some`; absent keys are `None` by the derive.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DigestError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DigestError> {
        visitor.visit_newtype_struct(self)
    }

    /// `toml::Spanned<T>` asks for a struct of a reserved name: it gets the
    /// node's span, then the node.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DigestError> {
        if is_spanned(name) {
            let span = self.cursor.peek_span()?;
            return visitor.visit_map(SpannedDeserializer::new(self, span));
        }
        self.deserialize_any(visitor)
    }

    /// Unit variants from strings (no config key has another kind of enum).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DigestError> {
        let c = self.cursor;
        match c.head()? {
            STR => visitor.visit_enum(c.text()?.into_deserializer()),
            _ => Err(DigestError("only unit variants are supported".into())),
        }
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 u128 i8 i16 i32 i64 i128 f32 f64 char str string seq
        bytes byte_buf map unit ignored_any unit_struct tuple_struct tuple identifier
    }
}

/// The entries of an array or a table.
struct Items<'c, 'de> {
    cursor: &'c mut Cursor<'de>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = DigestError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DigestError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Node { cursor: self.cursor }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> MapAccess<'de> for Items<'_, 'de> {
    type Error = DigestError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DigestError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Node { cursor: self.cursor }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DigestError> {
        seed.deserialize(Node { cursor: self.cursor })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::super::digest_write::digest;
    use super::*;

    fn via_toml(text: &str) -> String {
        format!("{:#?}", toml::from_str::<RawConfig>(text).expect("TOML"))
    }

    fn via_digest(text: &str) -> String {
        format!("{:#?}", read(&digest(text).expect("digest")).expect("read"))
    }

    /// Spans included: `Spanned`'s Debug shows them.
    #[test]
    fn every_shipped_config_reads_the_same_as_its_toml() {
        for text in [
            include_str!("../../routes/gateway.toml"),
            include_str!("../../tests/conformance/gateway.toml"),
            include_str!("../../benches/gateway.toml"),
        ] {
            assert_eq!(via_digest(text), via_toml(text));
        }
    }

    #[test]
    fn numbers_sizes_and_either_forms_read_the_same() {
        let text = r#"
[gateway]
max_body_size = 1_024
max_header_size = "32KiB"
max_header_count = 0x40
access_log = false
[services.s]
targets = [{ url = "http://a", weight = 3 }, { url = "http://b" }]
[[routes]]
path = "/a"
service = "s"
auth = { any_of = ["x"], claims = { tenant = "acme", roles = ["a", "b"] } }
"#;
        assert_eq!(via_digest(text), via_toml(text));
    }

    #[test]
    fn a_config_that_does_not_fit_fails_to_read() {
        for text in ["[gateway]\nbogus = 1\n", "[gateway]\nmax_header_count = \"many\"\n", "x = 1979-05-27\n"] {
            assert!(read(&digest(text).unwrap()).is_err(), "{text}");
        }
        assert!(digest("[gateway\n").unwrap_err().contains("line 1"));
        assert!(read(&[TABLE, 0, 0]).is_err(), "truncated");
    }
}
