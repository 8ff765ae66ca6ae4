//! Finding envoy-wam's configurations in an Envoy bootstrap (or any YAML/JSON holding Envoy
//! resources, such as an LDS or ECDS file) and in Istio `WasmPlugin` resources.

use super::yaml::{self, Node, Style, Value};

/// One filter configuration to check.
pub struct Target<'a> {
    /// The configuration text the filter would be handed.
    pub json: Vec<u8>,
    /// Where in the file it starts.
    pub line: usize,
    /// Maps a configuration field to its line in the file.
    pub locator: Locator,
    /// The http_connection_manager holding the filter (none for Istio, which writes its own).
    pub hcm: Option<&'a Node>,
}

pub enum Locator {
    /// The configuration's own tree, its line numbers shifted by `offset`.
    Tree { root: Node, offset: usize },
    /// Only the line where the configuration starts is known.
    Line(usize),
}

impl Locator {
    pub fn line_of(&self, field: &str) -> usize {
        match self {
            Locator::Tree { root, offset } => root.line_of(field) + offset,
            Locator::Line(line) => *line,
        }
    }
}

const WASM_TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
/// The native build's filter (an Envoy dynamic module), configured with the same JSON.
const DYNAMIC_MODULE_TYPE: &str =
    "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const STRING_VALUE_TYPE: &str = "google.protobuf.StringValue";

/// Every envoy-wam configuration in the documents, in file order.
pub fn targets(docs: &[Node]) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for doc in docs {
        if doc.get("kind").and_then(Node::str) == Some("WasmPlugin") {
            if let Some(cfg) = doc.get("spec").and_then(|s| s.get("pluginConfig")) {
                out.push(Target {
                    json: cfg.to_json().to_string().into_bytes(),
                    line: cfg.line,
                    locator: Locator::Tree {
                        root: cfg.clone(),
                        offset: 0,
                    },
                    hcm: None,
                });
            }
            continue;
        }
        walk(doc, None, &mut out);
    }
    out
}

/// The files a bootstrap takes its listeners from (file-based LDS:
/// `dynamic_resources.lds_config.path_config_source.path`, or the older `lds_config.path`):
/// the filter's configuration is in them, not here.
pub fn lds_files(docs: &[Node]) -> Vec<String> {
    let lds = |doc: &Node| doc.get("dynamic_resources")?.get("lds_config").cloned();
    docs.iter()
        .filter_map(lds)
        .filter_map(|c| {
            let from_source = c.get("path_config_source").and_then(|p| p.get("path"));
            from_source
                .or_else(|| c.get("path"))?
                .str()
                .map(str::to_string)
        })
        .collect()
}

fn type_is(node: &Node, suffix: &str) -> bool {
    node.get("@type")
        .and_then(Node::str)
        .is_some_and(|t| t.ends_with(suffix))
}

fn walk<'a>(node: &'a Node, hcm: Option<&'a Node>, out: &mut Vec<Target<'a>>) {
    match &node.value {
        Value::Map(entries) => {
            let hcm = if node.get("http_filters").is_some() {
                Some(node)
            } else {
                hcm
            };
            let configuration = if type_is(node, WASM_TYPE) {
                node.get("config").and_then(|c| c.get("configuration"))
            } else if type_is(node, DYNAMIC_MODULE_TYPE) {
                node.get("filter_config")
            } else {
                None
            };
            if let Some(t) = configuration.and_then(|cfg| config_target(cfg, hcm)) {
                out.push(t);
            }
            for (_, _, v) in entries {
                walk(v, hcm, out);
            }
        }
        Value::Seq(items) => items.iter().for_each(|n| walk(n, hcm, out)),
        Value::Scalar { .. } => {}
    }
}

/// The filter's configuration (a StringValue holding the JSON), wasm or native alike.
fn config_target<'a>(cfg: &'a Node, hcm: Option<&'a Node>) -> Option<Target<'a>> {
    if !type_is(cfg, STRING_VALUE_TYPE) {
        return None;
    }
    let value = cfg.get("value")?;
    let text = value.str()?;
    let key_line = cfg.key_line("value").unwrap_or(cfg.line);
    let locator = match value.value {
        // A literal block's lines are the file's lines (its indentation taken off), from the
        // line after `value: |`: the JSON, read as YAML, gives each field's line.
        Value::Scalar {
            style: Style::Literal,
            ..
        } => match yaml::parse(text) {
            Ok(docs) if docs.len() == 1 => Locator::Tree {
                root: docs.into_iter().next()?,
                offset: key_line,
            },
            _ => Locator::Line(key_line),
        },
        _ => Locator::Line(key_line),
    };
    Some(Target {
        json: text.as_bytes().to_vec(),
        line: key_line,
        locator,
        hcm,
    })
}
