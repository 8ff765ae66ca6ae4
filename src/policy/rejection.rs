//! Rejection handlers: what a refused request is answered with, chosen per rule, rule set,
//! resource or application. Bodies are templates whose placeholders are filled with values
//! escaped for the body's content type.

/// A configured answer to a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// An error page or document.
    Error {
        status: u16,
        content_type: String,
        body: Template,
    },
    /// Send the client elsewhere.
    Redirect { url: String, status: u16 },
}

/// A body with `{code}`, `{reference}` and `{rule}` placeholders; any other text (including
/// other braces, as in JSON) is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Code,
    Reference,
    Rule,
}

impl Template {
    pub fn parse(raw: &str) -> Self {
        const NAMES: [(&str, Part); 3] = [
            ("{code}", Part::Code),
            ("{reference}", Part::Reference),
            ("{rule}", Part::Rule),
        ];
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while !rest.is_empty() {
            if let Some((name, part)) = NAMES.iter().find(|(n, _)| rest.starts_with(n)) {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(part.clone());
                rest = &rest[name.len()..];
            } else {
                let mut chars = rest.chars();
                if let Some(c) = chars.next() {
                    text.push(c);
                }
                rest = chars.as_str();
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Self(parts)
    }

    fn render(&self, escape: Escape, code: &str, reference: &str, rule: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Code => escape.push(&mut out, code),
                Part::Reference => escape.push(&mut out, reference),
                Part::Rule => escape.push(&mut out, rule),
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    Html,
    Json,
    /// Anything else: control characters dropped, the rest as is.
    Text,
}

impl Escape {
    fn for_content_type(ct: &str) -> Self {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence.contains("html") || essence.ends_with("xml") {
            Escape::Html
        } else if essence.ends_with("json") {
            Escape::Json
        } else {
            Escape::Text
        }
    }

    fn push(self, out: &mut String, value: &str) {
        match self {
            Escape::Html => {
                for c in value.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '"' => out.push_str("&quot;"),
                        '\'' => out.push_str("&#39;"),
                        c if c.is_control() => {}
                        c => out.push(c),
                    }
                }
            }
            Escape::Json => {
                // The inside of a JSON string: serde_json's quoting without the quotes.
                let quoted = serde_json::to_string(value).unwrap_or_default();
                let inner = quoted
                    .strip_prefix('"')
                    .and_then(|q| q.strip_suffix('"'))
                    .unwrap_or_default();
                // `<` escaped too, so a JSON body sniffed as HTML cannot open a tag.
                out.push_str(&inner.replace('<', "\\u003c"));
            }
            Escape::Text => out.extend(value.chars().filter(|c| !c.is_control())),
        }
    }
}

impl Rejection {
    /// The status, headers and body of the answer. `code` is a short reason code, `reference`
    /// the id also written to the log, `rule` the label of the rule that refused.
    pub fn render(
        &self,
        code: &str,
        reference: &str,
        rule: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        match self {
            Rejection::Error {
                status,
                content_type,
                body,
            } => {
                let escape = Escape::for_content_type(content_type);
                let body = body.render(escape, code, reference, rule);
                (
                    *status,
                    vec![
                        ("content-type".into(), content_type.clone()),
                        ("cache-control".into(), "no-store".into()),
                        ("x-content-type-options".into(), "nosniff".into()),
                    ],
                    body.into_bytes(),
                )
            }
            Rejection::Redirect { url, status } => (
                *status,
                vec![
                    ("location".into(), url.clone()),
                    ("cache-control".into(), "no-store".into()),
                ],
                Vec::new(),
            ),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Rejection::Error { status, .. } | Rejection::Redirect { status, .. } => *status,
        }
    }
}
