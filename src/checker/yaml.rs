//! A YAML (and so JSON) document tree that keeps each node's line, for pointing an operator at
//! the line to fix. yaml-rust2's own `Yaml` tree drops the positions; its event parser has them.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A node and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written, and whether it was plain (unquoted, so `true` or `5` are typed).
    Scalar {
        text: String,
        style: Style,
    },
    Seq(Vec<Node>),
    /// Entries in document order: key, the key's line, value.
    Map(Vec<(String, usize, Node)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    /// `|`: the text's lines are the file's lines, from the line after the indicator.
    Literal,
    Folded,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|(_, _, v)| v),
            _ => None,
        }
    }

    pub fn key_line(&self, key: &str) -> Option<usize> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, l, _)| *l),
            _ => None,
        }
    }

    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `true`/`false` (YAML 1.2 core schema), or a quoted one as Envoy's JSON
    /// parsing of a bool field would not accept: only plain counts.
    pub fn bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar {
                text,
                style: Style::Plain,
            } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// The JSON the filter would be handed for this node (Istio turns `pluginConfig` into JSON
    /// the same way: plain scalars are typed, quoted ones are strings).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar { text, style } => {
                if *style != Style::Plain {
                    return J::String(text.clone());
                }
                match text.as_str() {
                    "null" | "Null" | "NULL" | "~" | "" => J::Null,
                    _ => {
                        if let Some(b) = self.bool() {
                            J::Bool(b)
                        } else if let Ok(i) = text.parse::<i64>() {
                            J::from(i)
                        } else if let Some(n) = text
                            .parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .and_then(serde_json::Number::from_f64)
                        {
                            J::Number(n)
                        } else {
                            J::String(text.clone())
                        }
                    }
                }
            }
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The line of the deepest node that a field path (`session.signing_keys[0].secret`, as
    /// in `ConfigError::field`) reaches: the field itself when it is there, else its nearest
    /// parent that is.
    pub fn line_of(&self, field: &str) -> usize {
        let mut node = self;
        let mut line = self.line;
        for seg in path_segments(field) {
            let next = match seg {
                Seg::Key(k) => node.key_line(&k).zip(node.get(&k)),
                Seg::Index(i) => match &node.value {
                    Value::Seq(items) => items.get(i).map(|n| (n.line, n)),
                    _ => None,
                },
            };
            match next {
                Some((l, n)) => {
                    line = l;
                    node = n;
                }
                None => break,
            }
        }
        line
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

fn path_segments(field: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in field.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_string()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                segs.push(Seg::Index(i));
            }
        }
    }
    segs
}

/// A YAML syntax error, with its line.
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Every document in a YAML stream (a JSON file is one document).
pub fn parse(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text)
        .load(&mut builder, true)
        .map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
    Ok(builder.docs)
}

enum Open {
    Seq(usize, usize, Vec<Node>),
    Map(
        usize,
        usize,
        Vec<(String, usize, Node)>,
        Option<(String, usize)>,
    ),
}

#[derive(Default)]
struct Builder {
    docs: Vec<Node>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq(_, _, items)) => items.push(node),
            Some(Open::Map(_, _, entries, pending)) => match pending.take() {
                Some((key, line)) => entries.push((key, line, node)),
                // A key: only scalar keys are kept (Envoy and Istio configs have no others).
                None => {
                    let key = node.str().unwrap_or_default().to_string();
                    *pending = Some((key, node.line));
                }
            },
        }
    }
}

fn style_of(style: TScalarStyle) -> Style {
    match style {
        TScalarStyle::Plain => Style::Plain,
        TScalarStyle::Literal => Style::Literal,
        TScalarStyle::Folded => Style::Folded,
        _ => Style::Quoted,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let style = match (style_of(style), tag) {
                    // `!!str 5` is a string.
                    (Style::Plain, Some(Tag { suffix, .. })) if suffix == "str" => Style::Quoted,
                    (s, _) => s,
                };
                self.push(
                    Node {
                        line,
                        value: Value::Scalar { text, style },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq(line, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Map(line, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(line, anchor, items)) => (
                        Node {
                            line,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Open::Map(line, anchor, entries, _)) => (
                        Node {
                            line,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push(node, anchor);
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    line,
                    value: Value::Scalar {
                        text: String::new(),
                        style: Style::Plain,
                    },
                });
                node.line = line;
                self.push(node, 0);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_paths() {
        let text = "a:\n  b:\n    - x: 1\n    - y: |\n        text\n";
        let docs = parse(text).unwrap();
        let root = &docs[0];
        assert_eq!(root.line_of("a.b[1].y"), 4);
        assert_eq!(root.line_of("a.b[0].x"), 3);
        assert_eq!(root.line_of("a.b[5].x"), 2);
        assert_eq!(root.line_of("(root)"), root.line);
        let y = root.get("a").unwrap().get("b").unwrap();
        assert!(matches!(y.value, Value::Seq(_)));
    }

    #[test]
    fn json_typing() {
        let docs = parse("{a: 5, b: \"5\", c: false, d: ~, e: [x]}").unwrap();
        assert_eq!(
            docs[0].to_json(),
            serde_json::json!({"a": 5, "b": "5", "c": false, "d": null, "e": ["x"]})
        );
    }
}
