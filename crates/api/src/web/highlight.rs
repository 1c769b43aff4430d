//! Syntax highlighting for file pages, with a bounded cost: Sublime Text grammars (syntect's
//! default set) picked by the file's name or first line, each line rendered on its own (every
//! scope open at its start opened again, every one still open at its end closed), as CSS classes
//! for the kinds the stylesheet colours (`hl-keyword`, `hl-string`, …; the policy allows no
//! inline styles; other scopes add no markup).
//!
//! - Bounded: files over [`MAX_BYTES`] or [`MAX_LINES`] lines, and lines over [`MAX_LINE`]
//!   bytes, are not highlighted; highlighting stops (the file is shown plain) after [`BUDGET`].
//! - Cached: files are content-addressed, so a blob's lines are highlighted once and kept (up to
//!   [`CACHE_BYTES`], the oldest highlighted evicted first), as is the verdict "plain".

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gitstratum_store::ObjectId;
use syntect::parsing::{BasicScopeStackOp, ParseState, Scope, ScopeStack, SyntaxSet};

/// Files larger than this are shown plain.
pub(crate) const MAX_BYTES: usize = 512 * 1024;
/// Files with more lines than this are shown plain.
pub(crate) const MAX_LINES: usize = 20_000;
/// A file with a line longer than this (minified code) is shown plain.
pub(crate) const MAX_LINE: usize = 4096;
/// The most time one file's highlighting may take; past it, the file is shown plain.
pub(crate) const BUDGET: Duration = Duration::from_millis(750);
/// The most bytes of highlighted lines kept.
const CACHE_BYTES: usize = 64 << 20;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

/// Highlighted lines (HTML, escaped) of a file, or `None` to show it plain.
type Lines = Option<Arc<Vec<String>>>;

#[derive(Default)]
struct Cache {
    entries: HashMap<ObjectId, (Lines, usize)>,
    order: VecDeque<ObjectId>,
    bytes: usize,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The highlighted lines of blob `id` named `path` with contents `text`, one HTML string per
/// line of `text.lines()`; `None`: show it plain (no grammar, too big, too slow).
pub(crate) fn lines(id: ObjectId, path: &str, text: &str) -> Lines {
    if let Some((lines, _)) = cache().lock().ok().and_then(|c| c.entries.get(&id).cloned()) {
        return lines;
    }
    let lines = highlight(path, text, BUDGET).map(Arc::new);
    let size = lines.as_ref().map_or(0, |l| l.iter().map(String::len).sum::<usize>()) + 64;
    if let Ok(mut c) = cache().lock()
        && !c.entries.contains_key(&id)
    {
        while c.bytes + size > CACHE_BYTES {
            let Some(old) = c.order.pop_front() else { break };
            if let Some((_, n)) = c.entries.remove(&old) {
                c.bytes -= n;
            }
        }
        c.entries.insert(id, (lines.clone(), size));
        c.order.push_back(id);
        c.bytes += size;
    }
    lines
}

/// The class a scope is shown with, for the few kinds the stylesheet colours (`comment…`,
/// `string…`, `keyword…`, `entity.name.tag…`, …); `None` for every other scope, which then adds no
/// markup (a page of highlighted code stays a few times its text, not ten).
fn class_of(scope: Scope) -> Option<&'static str> {
    let name = scope.build_string();
    let mut atoms = name.split('.');
    Some(match (atoms.next()?, atoms.next(), atoms.next()) {
        ("comment", ..) => "hl-comment",
        ("string", ..) => "hl-string",
        ("keyword", ..) => "hl-keyword",
        ("storage", ..) => "hl-storage",
        ("constant", ..) => "hl-constant",
        ("support", ..) => "hl-support",
        ("entity", Some("name"), Some("tag")) => "hl-tag",
        ("entity", Some("name"), _) => "hl-entity",
        ("variable", Some("parameter"), _) => "hl-param",
        _ => return None,
    })
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Highlights `text` as the grammar for `path` (or for its first line) reads it, within
/// `budget`; `None` when there is no grammar or a bound is passed.
pub(crate) fn highlight(path: &str, text: &str, budget: Duration) -> Option<Vec<String>> {
    if text.len() > MAX_BYTES {
        return None;
    }
    let set = syntaxes();
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or(name);
    let syntax = set
        .find_syntax_by_extension(name)
        .or_else(|| set.find_syntax_by_extension(extension))
        .or_else(|| set.find_syntax_by_first_line(text.lines().next().unwrap_or("")))?;
    if syntax.name == "Plain Text" {
        return None;
    }
    let started = Instant::now();
    let mut state = ParseState::new(syntax);
    let mut stack = ScopeStack::new();
    // Beside the stack: the class each scope on it is shown with (if any).
    let mut classes: Vec<Option<&'static str>> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i >= MAX_LINES || line.len() > MAX_LINE || (i % 64 == 63 && started.elapsed() > budget) {
            return None;
        }
        // The grammars expect each line with its newline.
        let with_newline = format!("{line}\n");
        let ops = state.parse_line(&with_newline, set).ok()?;
        let mut html = String::with_capacity(line.len() * 2);
        // What is open at the line's start is opened again: each line stands alone.
        for class in classes.iter().flatten() {
            let _ = write!(html, "<span class=\"{class}\">");
        }
        let mut at = 0;
        for (index, op) in &ops {
            let index = (*index).min(line.len());
            if index > at {
                escape_into(&mut html, &line[at..index]);
                at = index;
            }
            stack
                .apply_with_hook(op, |basic, _| match basic {
                    BasicScopeStackOp::Push(scope) => {
                        let class = class_of(scope);
                        if let Some(class) = class {
                            let _ = write!(html, "<span class=\"{class}\">");
                        }
                        classes.push(class);
                    }
                    BasicScopeStackOp::Pop => {
                        if let Some(Some(_)) = classes.pop() {
                            html.push_str("</span>");
                        }
                    }
                })
                .ok()?;
        }
        escape_into(&mut html, &line[at..]);
        for _ in classes.iter().flatten() {
            html.push_str("</span>");
        }
        out.push(html);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balanced(html: &str) -> bool {
        html.matches("<span").count() == html.matches("</span>").count()
    }

    #[test]
    fn rust_is_highlighted_line_by_line_with_balanced_spans() {
        let text = "fn main() {\n    /* a comment\n    over <two> lines */ let s = \"<script>\";\n}\n";
        let lines = highlight("src/main.rs", text, BUDGET).expect("a Rust grammar");
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| balanced(l)), "{lines:#?}");
        assert!(lines[0].contains("hl-keyword") || lines[0].contains("hl-storage"), "{}", lines[0]);
        // The comment's scope is opened again on its second line.
        assert!(lines[2].starts_with("<span class=\"hl-comment\">    over &lt;two&gt; lines"), "{}", lines[2]);
        // Text stays text.
        assert!(lines[2].contains("&lt;script&gt;") && !lines[2].contains("<script"), "{}", lines[2]);
        assert!(lines[1].contains("&lt;") || lines[2].contains("&lt;two&gt;"), "{lines:#?}");
    }

    #[test]
    fn what_has_no_grammar_or_is_too_big_is_plain() {
        assert!(highlight("notes.unknownext", "hello\n", BUDGET).is_none());
        assert!(highlight("a.rs", &"x".repeat(MAX_BYTES + 1), BUDGET).is_none());
        assert!(highlight("a.rs", &format!("let a = \"{}\";\n", "y".repeat(MAX_LINE)), BUDGET).is_none());
        // A shebang picks the grammar when the name does not.
        assert!(highlight("bin/tool", "#!/bin/bash\necho hi\n", BUDGET).is_some());
    }
}
