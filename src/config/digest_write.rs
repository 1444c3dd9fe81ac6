//! Writes the digest of a TOML config (the format is in `digest.rs`). Also
//! compiled into `build.rs`, which digests the config a component embeds,
//! so it uses nothing but `toml`.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) const STR: u8 = 0;
pub(crate) const INT: u8 = 1;
pub(crate) const FLOAT: u8 = 2;
pub(crate) const BOOL: u8 = 3;
pub(crate) const DATETIME: u8 = 4;
pub(crate) const ARRAY: u8 = 5;
pub(crate) const TABLE: u8 = 6;

/// The digest of `text`, or the TOML syntax error (with its line) if it is not TOML.
pub(crate) fn digest(text: &str) -> Result<Vec<u8>, String> {
    let root = DeTable::parse(text).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(text.len());
    table(&mut out, root.get_ref(), root.span())?;
    Ok(out)
}

fn head(out: &mut Vec<u8>, tag: u8, span: std::ops::Range<usize>) -> Result<(), String> {
    out.push(tag);
    for at in [span.start, span.end] {
        out.extend_from_slice(&u32::try_from(at).map_err(|_| "the config is larger than 4 GiB")?.to_le_bytes());
    }
    Ok(())
}

fn count(out: &mut Vec<u8>, n: usize) -> Result<(), String> {
    out.extend_from_slice(&u32::try_from(n).map_err(|_| "too many entries")?.to_le_bytes());
    Ok(())
}

fn text(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    count(out, s.len())?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn table(out: &mut Vec<u8>, t: &DeTable<'_>, span: std::ops::Range<usize>) -> Result<(), String> {
    head(out, TABLE, span)?;
    count(out, t.len())?;
    for (key, value) in t.iter() {
        head(out, STR, key.span())?;
        text(out, key.get_ref())?;
        self::value(out, value)?;
    }
    Ok(())
}

fn value(out: &mut Vec<u8>, v: &Spanned<DeValue<'_>>) -> Result<(), String> {
    let span = v.span();
    match v.get_ref() {
        DeValue::String(s) => {
            head(out, STR, span)?;
            text(out, s)
        }
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix()).map_err(|_| format!("integer `{i}` is out of range"))?;
            head(out, INT, span)?;
            out.extend_from_slice(&n.to_le_bytes());
            Ok(())
        }
        DeValue::Float(f) => {
            let x: f64 = f.as_str().parse().map_err(|_| format!("float `{f}` is out of range"))?;
            head(out, FLOAT, span)?;
            out.extend_from_slice(&x.to_le_bytes());
            Ok(())
        }
        DeValue::Boolean(b) => {
            head(out, BOOL, span)?;
            out.push(u8::from(*b));
            Ok(())
        }
        DeValue::Datetime(d) => {
            head(out, DATETIME, span)?;
            text(out, &d.to_string())
        }
        DeValue::Array(items) => {
            head(out, ARRAY, span)?;
            count(out, items.len())?;
            items.iter().try_for_each(|item| self::value(out, item))
        }
        DeValue::Table(t) => table(out, t, span),
    }
}
