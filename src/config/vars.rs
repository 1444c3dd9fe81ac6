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

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The node's environment variable for a placeholder name.
pub fn env_name(name: &str) -> String {
    format!("PORTCULLIS_VAR_{}", name.to_ascii_uppercase())
}

/// Every well-formed placeholder name in `text` (may include names from
/// places that take no placeholders; those are simply never looked up).
pub fn referenced(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("}}") else { break };
        let name = rest[..end].trim();
        if valid_name(name) && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
        rest = &rest[end + 2..];
    }
    names
}

/// Replaces each `{{ name }}` in `value` with its variable.
pub fn substitute(value: &str, vars: &Variables) -> Result<String, String> {
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
            format!("variable `{name}` is not set (node: environment variable {}; edge: Spin variable `{name}`)", env_name(name))
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
        assert_eq!(referenced("a {{ x }} b {{y_2}} {{ x }} {{ Bad }} {{"), ["x", "y_2"]);
    }
}
