//! Syntax highlighting for file pages, with a bounded cost: Sublime Text grammars (syntect's
//! default set) picked by the file's name or first line, each line rendered on its own (every
//! scope open at its start opened again, every one still open at its end closed), as CSS classes
//! (`hl-keyword`, `hl-string`, …; the policy allows no inline styles).
//!
//! - Bounded: files over [`MAX_BYTES`] or [`MAX_LINES`] lines, and lines over [`MAX_LINE`]
//!   bytes, are not highlighted; highlighting stops (the file is shown plain) after [`BUDGET`].
//! - Cached: files are content-addressed, so a blob's lines are highlighted once and kept (an LRU
//!   of [`CACHE_BYTES`]), as is the verdict "plain".

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gitstratum_store::ObjectId;
use syntect::html::{ClassStyle, line_tokens_to_classed_spans};
use syntect::parsing::{ParseState, Scope, ScopeStack, SyntaxSet};

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
const STYLE: ClassStyle = ClassStyle::SpacedPrefixed { prefix: "hl-" };

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

/// The classes of one scope (`string.quoted.double` → `hl-string hl-quoted hl-double`).
fn classes(scope: Scope) -> String {
    scope.build_string().split('.').map(|atom| format!("hl-{atom}")).collect::<Vec<_>>().join(" ")
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
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i >= MAX_LINES || line.len() > MAX_LINE || (i % 64 == 63 && started.elapsed() > budget) {
            return None;
        }
        // The grammars expect each line with its newline.
        let with_newline = format!("{line}\n");
        let ops = state.parse_line(&with_newline, set).ok()?;
        let mut html = String::with_capacity(line.len() * 2);
        for scope in stack.as_slice() {
            let _ = write!(html, "<span class=\"{}\">", classes(*scope));
        }
        let (body, _) = line_tokens_to_classed_spans(&with_newline, &ops, STYLE, &mut stack).ok()?;
        html.push_str(body.strip_suffix('\n').unwrap_or(&body));
        // Close what is open now: every scope still on the stack was opened on this line's
        // `<span>`s (again at its start, or by a push).
        html.push_str(&"</span>".repeat(stack.len()));
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
        let reopened = lines[2].split("over").next().unwrap_or_default();
        assert!(
            reopened.starts_with("<span class=\"hl-source hl-rust\">") && reopened.contains("hl-comment"),
            "{}",
            lines[2]
        );
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
