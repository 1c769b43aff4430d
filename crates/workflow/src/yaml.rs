//! A YAML document as a tree whose every node knows its line and column, so validation can point
//! at the exact place of a mistake.
//!
//! Anchors and aliases are resolved by copying (as GitHub does); merge keys (`<<`) are refused, as
//! GitHub refuses them; a second document in one file is an error. Limits on size, nesting depth
//! and alias expansion keep hostile input from exhausting memory or stack.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};

use crate::diag::{Diagnostic, Pos};

/// Largest workflow file accepted.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deepest nesting of mappings and sequences (GitHub's limit).
pub const MAX_DEPTH: usize = 50;
/// Most nodes a document may have once aliases are expanded (a guard against "billion laughs").
pub const MAX_NODES: usize = 200_000;

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar's text; `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub pos: Pos,
}

impl Node {
    /// The text of any scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Plain `~`, `null`, or nothing at all (`key:`).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Plain `true`/`false` in YAML 1.2's spellings.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.kind {
            NodeKind::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A plain scalar that reads as a number (YAML 1.2 core schema: decimal, `0x`, `0o`, floats).
    pub fn as_number(&self) -> Option<f64> {
        let NodeKind::Scalar { text, plain: true } = &self.kind else { return None };
        let t = text.as_str();
        if let Some(hex) = t.strip_prefix("0x") {
            return i64::from_str_radix(hex, 16).ok().map(|n| n as f64);
        }
        if let Some(oct) = t.strip_prefix("0o") {
            return i64::from_str_radix(oct, 8).ok().map(|n| n as f64);
        }
        match t {
            ".inf" | ".Inf" | ".INF" | "+.inf" => return Some(f64::INFINITY),
            "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
            _ => {}
        }
        let body = t.strip_prefix(['+', '-']).unwrap_or(t);
        let looks_numeric = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
        if looks_numeric { t.parse().ok() } else { None }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The value under a key in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.as_scalar() == Some(key)).map(|(_, v)| v)
    }

    /// What kind of node this is, for messages ("expected a mapping, found a sequence").
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } if self.as_bool().is_some() => "a boolean",
            NodeKind::Scalar { .. } if self.as_number().is_some() => "a number",
            NodeKind::Scalar { .. } => "a string",
            NodeKind::Seq(_) => "a sequence",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Converts to JSON (for matrix values and `with:` inputs, which may be any YAML value).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            NodeKind::Scalar { text, plain } => {
                if !plain {
                    serde_json::Value::String(text.clone())
                } else if self.is_null() {
                    serde_json::Value::Null
                } else if let Some(b) = self.as_bool() {
                    serde_json::Value::Bool(b)
                } else if let Some(n) = self.as_number().and_then(serde_json::Number::from_f64) {
                    // Integers stay integers so they print as `3`, not `3.0`.
                    match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => serde_json::Value::from(f as i64),
                        _ => serde_json::Value::Number(n),
                    }
                } else {
                    serde_json::Value::String(text.clone())
                }
            }
            NodeKind::Seq(items) => items.iter().map(Node::to_json).collect(),
            NodeKind::Map(entries) => serde_json::Value::Object(
                entries.iter().map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json())).collect(),
            ),
        }
    }
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(Node, Node)>, key: Option<Node> },
}

fn pos_of(marker: &saphyr_parser::Marker) -> Pos {
    Pos {
        line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
        col: u32::try_from(marker.col() + 1).unwrap_or(u32::MAX),
    }
}

/// Parses one YAML document. An empty document is a null scalar.
pub fn parse(source: &str) -> Result<Node, Diagnostic> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Diagnostic::new(
            Pos::START,
            format!("the file is {} bytes; workflow files may be at most {MAX_SOURCE_BYTES} bytes", source.len()),
        ));
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut nodes = 0usize;

    for event in Parser::new_from_str(source) {
        // After an error the parser repeats it forever: stop at the first.
        let (event, span) =
            event.map_err(|e| Diagnostic::new(pos_of(e.marker()), format!("invalid YAML: {}", e.info())))?;
        let pos = pos_of(&span.start);
        let finished: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::new(pos, "a workflow file must hold exactly one YAML document"));
                }
                None
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Diagnostic::new(pos, "alias refers to an unknown anchor"))?;
                nodes = nodes.saturating_add(count_nodes(&node));
                Some((Node { pos, ..node }, 0))
            }
            Event::Scalar(text, style, anchor, tag) => {
                nodes += 1;
                let plain = match &tag {
                    Some(tag) => scalar_tag(tag, &text, style, pos)?,
                    None => matches!(style, ScalarStyle::Plain),
                };
                Some((Node { kind: NodeKind::Scalar { text: text.into_owned(), plain }, pos }, anchor))
            }
            Event::SequenceStart(anchor, tag) => {
                collection_tag(tag.as_deref(), "seq", pos)?;
                stack.push(Frame::Seq { pos, anchor, items: Vec::new() });
                None
            }
            Event::MappingStart(anchor, tag) => {
                collection_tag(tag.as_deref(), "map", pos)?;
                stack.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((Node { kind: NodeKind::Seq(items), pos }, anchor)),
                _ => return Err(Diagnostic::new(pos, "invalid YAML: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { pos, anchor, entries, .. }) => {
                    Some((Node { kind: NodeKind::Map(entries), pos }, anchor))
                }
                _ => return Err(Diagnostic::new(pos, "invalid YAML: unbalanced mapping")),
            },
        };
        if stack.len() > MAX_DEPTH {
            return Err(Diagnostic::new(
                pos,
                format!("Maximum object depth exceeded: the document nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        if nodes > MAX_NODES {
            return Err(Diagnostic::new(
                pos,
                format!("the document has more than {MAX_NODES} nodes once aliases are expanded"),
            ));
        }
        let Some((node, anchor)) = finished else { continue };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar { .. }) {
                        return Err(Diagnostic::new(node.pos, "mapping keys must be strings"));
                    }
                    if matches!(&node.kind, NodeKind::Scalar { text, plain: true } if text == "<<") {
                        return Err(Diagnostic::new(
                            node.pos,
                            "YAML merge keys (<<) are not supported; use an alias of the whole value instead",
                        ));
                    }
                    if let Some((first, _)) = entries.iter().find(|(k, _)| k.as_scalar() == node.as_scalar()) {
                        return Err(Diagnostic::new(
                            node.pos,
                            format!(
                                "duplicate key {:?} (first at line {})",
                                node.as_scalar().unwrap_or_default(),
                                first.pos.line
                            ),
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(root.unwrap_or(Node { kind: NodeKind::Scalar { text: String::new(), plain: true }, pos: Pos::START }))
}

/// The tags of YAML's core schema GitHub accepts (`!!str`, `!!int`, …); any other is refused.
const CORE_TAGS: [&str; 7] = ["str", "int", "float", "bool", "null", "seq", "map"];

fn full_tag(tag: &Tag) -> String {
    if tag.handle == "!" { format!("!{}", tag.suffix) } else { format!("{}{}", tag.handle, tag.suffix) }
}

fn core_tag(tag: &Tag, pos: Pos) -> Result<&str, Diagnostic> {
    // `!!int` arrives resolved (handle `tag:yaml.org,2002:`); `!<tag:yaml.org,2002:int>` verbatim.
    let suffix = if tag.is_yaml_core_schema() {
        Some(tag.suffix.as_str())
    } else if tag.handle.is_empty() {
        tag.suffix.strip_prefix("tag:yaml.org,2002:")
    } else {
        None
    };
    match suffix {
        Some(kind) if CORE_TAGS.contains(&kind) => Ok(kind),
        _ => Err(Diagnostic::new(pos, format!("Unexpected tag '{}'", full_tag(tag)))),
    }
}

fn collection_tag(tag: Option<&Tag>, want: &str, pos: Pos) -> Result<(), Diagnostic> {
    match tag {
        Some(tag) if core_tag(tag, pos)? != want => Err(Diagnostic::new(
            pos,
            format!("the tag '{}' cannot mark a {}", full_tag(tag), if want == "seq" { "sequence" } else { "mapping" }),
        )),
        _ => Ok(()),
    }
}

/// Checks an explicitly tagged scalar as GitHub does: a non-string tag needs a plain scalar whose
/// text reads as that type. Returns whether the scalar is plain (`!!str` makes it a string).
fn scalar_tag(tag: &Tag, text: &str, style: ScalarStyle, pos: Pos) -> Result<bool, Diagnostic> {
    let kind = core_tag(tag, pos)?;
    if kind == "str" {
        return Ok(false);
    }
    let style_name = match style {
        ScalarStyle::Plain => None,
        ScalarStyle::SingleQuoted => Some("SingleQuoted"),
        ScalarStyle::DoubleQuoted => Some("DoubleQuoted"),
        ScalarStyle::Literal => Some("Literal"),
        ScalarStyle::Folded => Some("Folded"),
    };
    if let Some(style_name) = style_name {
        return Err(Diagnostic::new(
            pos,
            format!(
                "The scalar style '{style_name}' on line {} and column {} is not valid with the tag '{}'",
                pos.line,
                pos.col,
                full_tag(tag)
            ),
        ));
    }
    let node = Node { kind: NodeKind::Scalar { text: text.to_owned(), plain: true }, pos };
    let fits = match kind {
        "bool" => node.as_bool().is_some(),
        "null" => node.is_null(),
        "int" => node.as_number().is_some_and(|n| n.fract() == 0.0) && !text.contains(['.', 'e', 'E']),
        "float" => node.as_number().is_some() || matches!(text, ".nan" | ".NaN" | ".NAN"),
        _ => false,
    };
    if !fits {
        return Err(Diagnostic::new(
            pos,
            format!(
                "The value '{text}' on line {} and column {} is invalid for the type '{}'",
                pos.line,
                pos.col,
                full_tag(tag)
            ),
        ));
    }
    Ok(true)
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_aliases_and_scalars() {
        let doc = parse("on: push\njobs:\n  a: &x\n    runs-on: 'ubuntu'\n  b: *x\n").expect("valid");
        let jobs = doc.get("jobs").expect("jobs");
        assert_eq!(jobs.pos, Pos { line: 3, col: 3 });
        let b = jobs.get("b").expect("b");
        assert_eq!(b.get("runs-on").and_then(Node::as_scalar), Some("ubuntu"));
        assert_eq!(b.pos.line, 5, "an alias sits where it is used");
        assert_eq!(parse("a: 0x1f").expect("valid").get("a").and_then(Node::as_number), Some(31.0));
        assert_eq!(parse("a: '12'").expect("valid").get("a").and_then(Node::as_number), None);
        assert_eq!(parse("a: 1.5e3").expect("valid").get("a").and_then(Node::as_number), Some(1500.0));
        assert_eq!(parse("a: yes").expect("valid").get("a").and_then(Node::as_bool), None, "YAML 1.2: yes is a string");
        assert!(parse("").expect("empty").is_null());
        let tagged = parse("a: !!str 12\nb: !!bool FALSE\nc: !<tag:yaml.org,2002:int> 7\n").expect("valid tags");
        assert_eq!(tagged.get("a").map(Node::to_json), Some(serde_json::json!("12")), "!!str makes a string");
        assert_eq!(tagged.get("b").and_then(Node::as_bool), Some(false));
        assert_eq!(tagged.get("c").and_then(Node::as_number), Some(7.0));
    }

    #[test]
    fn refusals_point_at_the_problem() {
        for (src, line, needle) in [
            ("a: 1\na: 2\n", 2, "duplicate key \"a\" (first at line 1)"),
            ("x: &b {k: 1}\ny:\n  <<: *b\n", 3, "merge keys"),
            ("a: 1\n---\nb: 2\n", 2, "exactly one YAML document"),
            ("a: [1, 2\n", 2, "invalid YAML"),
            ("a: b: c\n", 1, "invalid YAML"),
            ("? [1]\n: x\n", 1, "keys must be strings"),
            (
                "a: !!bool test\n",
                1,
                "The value 'test' on line 1 and column 4 is invalid for the type 'tag:yaml.org,2002:bool'",
            ),
            ("a: !!int \"300\"\n", 1, "The scalar style 'DoubleQuoted'"),
            ("a: !!timestamp 2022-10-26\n", 1, "Unexpected tag 'tag:yaml.org,2002:timestamp'"),
            ("a: !custom x\n", 1, "Unexpected tag '!custom'"),
        ] {
            let err = parse(src).expect_err(src);
            assert_eq!(err.pos.line, line, "{src:?}: {err}");
            assert!(err.message.contains(needle), "{src:?}: {err}");
        }
    }

    #[test]
    fn hostile_documents_are_refused() {
        let deep = "a: ".to_owned() + &"[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).expect_err("deep").message.contains("nests deeper"));
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 { "a".to_owned() } else { format!("l{}", i - 1) };
            laughs.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse(&laughs).expect_err("laughs").message.contains("nodes once aliases are expanded"));
        let huge = "#".repeat(MAX_SOURCE_BYTES + 1);
        assert!(parse(&huge).expect_err("huge").message.contains("at most"));
    }
}
