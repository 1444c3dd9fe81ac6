//! Reading a file that does not fit [`RawConfig`] as a whole, entry by
//! entry, so that one run reports every independent mistake: each syntax
//! error TOML can recover from, and each section, service, route, provider
//! and policy that does not fit its shape. What does fit is compiled too
//! (and its own errors reported); references to entries that did not parse
//! are not reported again.

use serde::de::{self, DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::Compiler;
use super::raw::{RawAuth, RawConfig};

impl Compiler<'_> {
    /// The parts of the file that fit, every mistake recorded.
    pub(super) fn sections(&mut self) -> RawConfig {
        let (root, syntax) = DeTable::parse_recoverable(self.text);
        for e in syntax {
            self.error(e.span().unwrap_or(0..0), "(syntax)", e.message());
        }
        let mut raw = RawConfig::default();
        for (key, value) in root.get_ref().iter() {
            match key.get_ref().as_ref() {
                "gateway" => raw.gateway = self.entry(value, "gateway").unwrap_or_default(),
                "services" => {
                    for (name, v) in self.table(value, "services") {
                        match self.entry(v, &format!("services.{name}")) {
                            Some(service) => drop(raw.services.insert(name, service)),
                            None => raw.unparsed.services.push(name),
                        }
                    }
                }
                "routes" => self.routes(value, &mut raw),
                "auth" => self.auth_section(value, &mut raw),
                "limits" => {
                    for (name, v) in self.table(value, "limits") {
                        match self.entry(v, &format!("limits.{name}")) {
                            Some(limit) => drop(raw.limits.insert(name, limit)),
                            None => raw.unparsed.limits.push(name),
                        }
                    }
                }
                "cors" => {
                    for (name, v) in self.table(value, "cors") {
                        match self.entry(v, &format!("cors.{name}")) {
                            Some(policy) => drop(raw.cors.insert(name, policy)),
                            None => raw.unparsed.cors.push(name),
                        }
                    }
                }
                "sweep" => raw.sweep = self.entry(value, "sweep"),
                "admin" => raw.admin = self.entry(value, "admin"),
                "listeners" => raw.listeners = self.entry(value, "listeners").unwrap_or_default(),
                "acme" => raw.acme = self.entry(value, "acme"),
                other => {
                    let expected: Vec<String> = section_names().iter().map(|n| format!("`{n}`")).collect();
                    let message = format!("unknown field `{other}`, expected one of {}", expected.join(", "));
                    self.error(key.span(), other, message);
                }
            }
        }
        raw
    }

    /// One entry, deserialized on its own; a mistake is recorded with its
    /// key under `path`.
    fn entry<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let inner: Vec<&str> =
                    inner.split('.').filter(|p| !p.is_empty() && *p != "$__serde_spanned_private_value").collect();
                let key = if inner.is_empty() { path.to_string() } else { format!("{path}.{}", inner.join(".")) };
                self.error(e.inner().span().unwrap_or(value.span()), key, e.inner().message());
                None
            }
        }
    }

    /// The entries of a table section (a section that is not a table is an error).
    fn table<'t>(&mut self, value: &'t Spanned<DeValue<'t>>, path: &str) -> Vec<(String, &'t Spanned<DeValue<'t>>)> {
        match value.get_ref() {
            DeValue::Table(t) => t.iter().map(|(k, v)| (k.get_ref().to_string(), v)).collect(),
            _ => {
                self.error(value.span(), path, "must be a table");
                Vec::new()
            }
        }
    }

    fn routes(&mut self, value: &Spanned<DeValue<'_>>, raw: &mut RawConfig) {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(value.span(), "routes", "must be an array of tables: write each route as `[[routes]]`");
            return;
        };
        for (i, item) in items.iter().enumerate() {
            if let Some(route) = self.entry(item, &format!("routes[{i}]")) {
                raw.routes.push(route);
                raw.route_indexes.push(i);
            }
        }
    }

    /// `[auth]`: its own keys, then each provider on its own.
    fn auth_section(&mut self, value: &Spanned<DeValue<'_>>, raw: &mut RawConfig) {
        let DeValue::Table(table) = value.get_ref() else {
            self.error(value.span(), "auth", "must be a table");
            return;
        };
        let mut own = DeTable::default();
        for (k, v) in table.iter() {
            if !matches!(k.get_ref().as_ref(), "jwt" | "api_key" | "mtls" | "introspection") {
                own.insert(k.clone(), v.clone());
            }
        }
        let own = Spanned::new(value.span(), DeValue::Table(own));
        let mut auth: RawAuth = self.entry(&own, "auth").unwrap_or_default();
        for kind in ["jwt", "api_key", "mtls", "introspection"] {
            let Some((_, providers)) = table.iter().find(|(k, _)| k.get_ref() == kind) else { continue };
            for (name, v) in self.table(providers, &format!("auth.{kind}")) {
                let path = format!("auth.{kind}.{name}");
                let parsed = match kind {
                    "jwt" => self.entry(v, &path).map(|p| drop(auth.jwt.insert(name.clone(), p))),
                    "api_key" => self.entry(v, &path).map(|p| drop(auth.api_key.insert(name.clone(), p))),
                    "mtls" => self.entry(v, &path).map(|p| drop(auth.mtls.insert(name.clone(), p))),
                    _ => self.entry(v, &path).map(|p| drop(auth.introspection.insert(name.clone(), p))),
                };
                if parsed.is_none() {
                    raw.unparsed.providers.push(name);
                }
            }
        }
        raw.auth = auth;
    }
}

/// The top-level sections a file may have: [`RawConfig`]'s fields, as its
/// derived `Deserialize` names them (so the list cannot fall behind it).
pub(super) fn section_names() -> &'static [&'static str] {
    let mut names = Names(&[]);
    let _ = <RawConfig as serde::Deserialize>::deserialize(&mut names);
    names.0
}

/// A deserializer that only notes the fields a struct asks for.
struct Names(&'static [&'static str]);

#[derive(Debug)]
struct Noted;

impl std::fmt::Display for Noted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields noted")
    }
}

impl std::error::Error for Noted {}

impl de::Error for Noted {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Noted
    }
}

impl<'de> de::Deserializer<'de> for &mut Names {
    type Error = Noted;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Noted> {
        Err(Noted)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Noted> {
        self.0 = fields;
        Err(Noted)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
