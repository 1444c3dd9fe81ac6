//! Route paths (matchit syntax) and path-rewrite templates that use their
//! parameters. Both are checked once, when the config is compiled.

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

/// A compiled rewrite template such as `/users/{id}/{rest}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`, checking that every `{name}` it uses is one of `params`.
    pub(crate) fn parse(text: &str, params: &[String]) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("rewrite template `{text}` must start with `/`"));
        }
        let pieces = split(text)?
            .into_iter()
            .map(|piece| match piece {
                Piece::Param(name) if name.starts_with('*') => {
                    Err(format!("in rewrite template `{text}`, write `{{{}}}`, without the `*`", &name[1..]))
                }
                Piece::Param(name) if !params.contains(&name) => Err(format!(
                    "rewrite template `{text}` uses {{{name}}}, but the route path {}",
                    if params.is_empty() {
                        "has no parameters".to_string()
                    } else {
                        format!("only has {}", params.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", "))
                    }
                )),
                other => Ok(other),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { pieces })
    }

    /// Fills the template with matched parameter values.
    /// Sized exactly, with `extra` bytes to spare (a query to come): a
    /// string without spare room becomes a URI's bytes without another
    /// allocation.
    pub(crate) fn render<'v>(&'v self, extra: usize, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
        let piece = |p: &'v Piece| match p {
            Piece::Text(t) => t.as_str(),
            Piece::Param(name) => lookup(name).unwrap_or_default(),
        };
        let mut out = String::with_capacity(self.pieces.iter().map(|p| piece(p).len()).sum::<usize>() + extra);
        self.pieces.iter().for_each(|p| out.push_str(piece(p)));
        out
    }
}

/// The parameter names a matchit route path declares (`{id}` → `id`,
/// `{*rest}` → `rest`), after checking its braces.
pub(crate) fn path_params(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("route path `{path}` must start with `/`"));
    }
    let mut names = Vec::new();
    for piece in split(path)? {
        if let Piece::Param(name) = piece {
            let bare = name.strip_prefix('*').unwrap_or(&name).to_string();
            if names.contains(&bare) {
                return Err(format!("route path `{path}` declares {{{bare}}} twice"));
            }
            names.push(bare);
        }
    }
    Ok(names)
}

/// The literal text before the first parameter of a route path.
pub(crate) fn static_prefix(path: &str) -> String {
    match split(path) {
        Ok(pieces) => match pieces.first() {
            Some(Piece::Text(t)) => t.clone(),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

/// Splits text into literal and `{param}` pieces; `{{` and `}}` are literal braces.
fn split(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("`{text}` has a `{{` without its `}}`")),
                    }
                }
                let bare = name.strip_prefix('*').unwrap_or(&name);
                if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{text}` has a bad parameter `{{{name}}}`: names are letters, digits and `_`"
                    ));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Param(name));
            }
            '}' => return Err(format!("`{text}` has a `}}` without its `{{`")),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn path_params_are_collected_and_checked() {
        assert_eq!(path_params("/v1/users/{id}/files/{*rest}").unwrap(), names(&["id", "rest"]));
        assert_eq!(path_params("/plain").unwrap(), Vec::<String>::new());
        assert_eq!(path_params("/a/{{literal}}").unwrap(), Vec::<String>::new());
        assert!(path_params("no-slash").unwrap_err().contains("must start with `/`"));
        assert!(path_params("/a/{id").unwrap_err().contains("without its"));
        assert!(path_params("/a/id}").unwrap_err().contains("without its"));
        assert!(path_params("/a/{}").unwrap_err().contains("bad parameter"));
        assert!(path_params("/a/{x-y}").unwrap_err().contains("bad parameter"));
        assert!(path_params("/a/{id}/b/{id}").unwrap_err().contains("twice"));
    }

    #[test]
    fn templates_render_known_params_only() {
        let params = names(&["id", "rest"]);
        let t = Template::parse("/users/{id}/f/{rest}", &params).unwrap();
        let got = t.render(0, |n| match n {
            "id" => Some("42"),
            "rest" => Some("a/b.txt"),
            _ => None,
        });
        assert_eq!(got, "/users/42/f/a/b.txt");
        let err = Template::parse("/users/{user}", &params).unwrap_err();
        assert!(err.contains("{user}") && err.contains("{id}, {rest}"), "{err}");
        let err = Template::parse("/users/{user}", &[]).unwrap_err();
        assert!(err.contains("has no parameters"), "{err}");
        assert!(Template::parse("users/{id}", &params).unwrap_err().contains("start with"));
        assert!(Template::parse("/x/{*rest}", &params).unwrap_err().contains("without the `*`"));
    }

    #[test]
    fn static_prefix_stops_at_first_param() {
        assert_eq!(static_prefix("/v1/users/{id}"), "/v1/users/");
        assert_eq!(static_prefix("/v1/{*rest}"), "/v1/");
        assert_eq!(static_prefix("/{id}"), "/");
        assert_eq!(static_prefix("/health"), "/health");
    }
}
