//! `{{ name }}` placeholders in config values, so one config file serves
//! every environment: the node fills them from `PORTCULLIS_VAR_<NAME>`
//! environment variables, the edge from Spin variables of the same name.
//! Names follow Spin's rules: a lower-case letter, then lower-case letters,
//! digits and `_`.

use std::collections::BTreeMap;

/// Values for placeholders, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables(BTreeMap<String, String>);

impl Variables {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The node's environment variable for a placeholder name.
pub(crate) fn env_name(name: &str) -> String {
    format!("PORTCULLIS_VAR_{}", name.to_ascii_uppercase())
}

/// Keys whose values are route patterns, never placeholders (`{{` there is a literal brace).
const PATTERN_KEYS: &[&str] = &["path", "rewrite", "strip_prefix", "host", "name"];

/// Every placeholder name used in the string values of the TOML `text`
/// (comments and route patterns aside), once each. Text that is not TOML
/// uses none.
pub fn referenced(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(table) = text.parse::<toml::Table>() {
        collect(&toml::Value::Table(table), "", &mut names);
    }
    names
}

fn collect(value: &toml::Value, key: &str, names: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if !PATTERN_KEYS.contains(&key) => {
            for name in placeholders_in(s) {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
        toml::Value::Array(items) => items.iter().for_each(|v| collect(v, key, names)),
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| collect(v, k, names)),
        _ => {}
    }
}

/// The well-formed placeholder names in one string value.
pub(crate) fn placeholders_in(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            let start = rest.find("{{")?;
            rest = &rest[start + 2..];
            let end = rest.find("}}")?;
            let name = rest[..end].trim();
            rest = &rest[end + 2..];
            if valid_name(name) {
                return Some(name);
            }
        }
    })
}

/// Replaces each `{{ name }}` in `value` with its variable.
pub(crate) fn substitute(value: &str, vars: &Variables) -> Result<String, String> {
    if !value.contains("{{") {
        return Ok(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("`{value}` has a `{{{{` without its `}}}}`"))?;
        let name = after[..end].trim();
        if !valid_name(name) {
            return Err(format!(
                "`{{{{ {name} }}}}` is not a variable name (a lower-case letter, then lower-case letters, digits and `_`)"
            ));
        }
        let v = vars.get(name).ok_or_else(|| {
            format!(
                "variable `{name}` is not set (node: environment variable {}; edge: Spin variable `{name}`)",
                env_name(name)
            )
        })?;
        out.push_str(v);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_filled() {
        let mut vars = Variables::new();
        vars.insert("origin_port", "9080");
        vars.insert("host", "127.0.0.1");
        assert_eq!(substitute("http://{{host}}:{{ origin_port }}/x", &vars).unwrap(), "http://127.0.0.1:9080/x");
        assert_eq!(substitute("plain", &vars).unwrap(), "plain");
        let err = substitute("http://{{ missing }}", &vars).unwrap_err();
        assert!(err.contains("PORTCULLIS_VAR_MISSING") && err.contains("Spin variable `missing`"), "{err}");
        assert!(substitute("{{ Bad }}", &vars).unwrap_err().contains("not a variable name"));
        assert!(substitute("{{ open", &vars).unwrap_err().contains("without its"));
        let text = "# a comment mentions {{ name }}\n[s]\nurl = \"http://{{ x }}:{{y_2}}\"\nhs = [\"{{ x }}\", \"{{ Bad }}\"]\npath = \"/a/{{lit}}\"\n";
        assert_eq!(referenced(text), ["x", "y_2"]);
        assert!(referenced("not [ toml").is_empty());
    }
}
