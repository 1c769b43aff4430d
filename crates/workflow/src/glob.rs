//! GitHub's filter patterns for branches, tags and paths.
//!
//! - `*` matches any characters except `/`; `**` matches any characters; `**/` also matches no
//!   directory at all (`docs/**/*.md` matches `docs/README.md`);
//! - `?` makes the preceding character optional, `+` repeats it one or more times;
//! - `[abc]`, `[a-z0-9]` match one listed character; `\` escapes the next character;
//! - in a list, a pattern starting with `!` excludes what earlier patterns included; later
//!   patterns win, so order matters.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Char(char),
    Class(Vec<(char, char)>),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
    /// `**/`: nothing, or any run of characters ending in `/`.
    AnyDirs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    One,
    ZeroOrOne,
    OneOrMore,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    atoms: Vec<(Atom, Repeat)>,
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pattern {:?}: {}", self.pattern, self.reason)
    }
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        let err = |reason| PatternError { pattern: source.to_owned(), reason };
        let chars: Vec<char> = source.chars().collect();
        let mut atoms: Vec<(Atom, Repeat)> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let atom = match c {
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                        Atom::AnyDirs
                    } else {
                        Atom::DoubleStar
                    }
                }
                '*' => Atom::Star,
                '?' | '+' => {
                    let repeat = if c == '?' { Repeat::ZeroOrOne } else { Repeat::OneOrMore };
                    match atoms.last_mut() {
                        Some((Atom::Char(_) | Atom::Class(_), r @ Repeat::One)) => *r = repeat,
                        _ => return Err(err("'?' and '+' must follow a character or a [class]")),
                    }
                    continue;
                }
                '[' => {
                    let mut ranges = Vec::new();
                    loop {
                        let Some(&first) = chars.get(i) else { return Err(err("unclosed '['")) };
                        i += 1;
                        if first == ']' {
                            break;
                        }
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                            let last = chars[i + 1];
                            i += 2;
                            if last < first {
                                return Err(err("a range in [] runs backwards"));
                            }
                            ranges.push((first, last));
                        } else {
                            ranges.push((first, first));
                        }
                    }
                    if ranges.is_empty() {
                        return Err(err("empty '[]'"));
                    }
                    Atom::Class(ranges)
                }
                '\\' => {
                    let Some(&escaped) = chars.get(i) else { return Err(err("trailing '\\'")) };
                    i += 1;
                    Atom::Char(escaped)
                }
                c => Atom::Char(c),
            };
            atoms.push((atom, Repeat::One));
        }
        Ok(Pattern { source: source.to_owned(), atoms })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // memo[a][t]: Some(result) once (atom a, text position t) has been tried; keeps the
        // backtracking polynomial.
        let mut memo = vec![None; (self.atoms.len() + 1) * (text.len() + 1)];
        self.match_from(0, 0, &text, &mut memo)
    }

    fn match_from(&self, a: usize, t: usize, text: &[char], memo: &mut [Option<bool>]) -> bool {
        let key = a * (text.len() + 1) + t;
        if let Some(done) = memo[key] {
            return done;
        }
        let result = match self.atoms.get(a) {
            None => t == text.len(),
            Some((atom, repeat)) => {
                let one = |t: usize| -> bool {
                    match atom {
                        Atom::Char(c) => text.get(t) == Some(c),
                        Atom::Class(ranges) => {
                            text.get(t).is_some_and(|c| ranges.iter().any(|(lo, hi)| lo <= c && c <= hi))
                        }
                        _ => false,
                    }
                };
                match (atom, repeat) {
                    (Atom::Star, _) => {
                        let run = text[t..].iter().take_while(|c| **c != '/').count();
                        (0..=run).any(|n| self.match_from(a + 1, t + n, text, memo))
                    }
                    (Atom::DoubleStar, _) => (t..=text.len()).any(|end| self.match_from(a + 1, end, text, memo)),
                    (Atom::AnyDirs, _) => {
                        self.match_from(a + 1, t, text, memo)
                            || (t..text.len())
                                .any(|slash| text[slash] == '/' && self.match_from(a + 1, slash + 1, text, memo))
                    }
                    (_, Repeat::One) => one(t) && self.match_from(a + 1, t + 1, text, memo),
                    (_, Repeat::ZeroOrOne) => {
                        self.match_from(a + 1, t, text, memo) || (one(t) && self.match_from(a + 1, t + 1, text, memo))
                    }
                    (_, Repeat::OneOrMore) => {
                        let run = (t..text.len()).take_while(|&i| one(i)).count();
                        (1..=run).any(|n| self.match_from(a + 1, t + n, text, memo))
                    }
                }
            }
        };
        memo[key] = Some(result);
        result
    }
}

/// A list of patterns applied in order: a plain pattern includes what it matches, a `!pattern`
/// excludes it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterList {
    rules: Vec<(bool, Pattern)>,
}

impl FilterList {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<FilterList, PatternError> {
        let rules = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                match p.strip_prefix('!') {
                    Some(rest) => Pattern::new(rest).map(|pat| (false, pat)),
                    None => Pattern::new(p).map(|pat| (true, pat)),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(FilterList { rules })
    }

    /// Whether the list includes `text`: the last rule that matches decides.
    pub fn includes(&self, text: &str) -> bool {
        self.rules.iter().rev().find(|(_, p)| p.matches(text)).is_some_and(|(include, _)| *include)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's "filter pattern cheat sheet": pattern, texts it matches, texts it does not.
    const CHEAT_SHEET: &[(&str, &[&str], &[&str])] = &[
        ("feature/*", &["feature/my-branch", "feature/your-branch"], &["feature/a/b", "feature"]),
        (
            "feature/**",
            &["feature/beta-a/my-branch", "feature/your-branch", "feature/mona/the/octocat"],
            &["features/x"],
        ),
        ("main", &["main"], &["main2", "xmain"]),
        ("*", &["main", "releases"], &["releases/v1"]),
        ("**", &["all/branch/and/tag/names", "main"], &[]),
        ("*feature", &["mona-feature", "feature", "ver-10-feature"], &["feature-x"]),
        ("v2*", &["v2", "v2.0", "v2.9"], &["v3"]),
        ("v[12].[0-9]+.[0-9]+", &["v1.10.1", "v2.0.0"], &["v3.0.0", "v1.x.1", "v1.10"]),
        ("*.jsx?", &["page.js", "page.jsx"], &["page.jsxx", "dir/page.js"]),
        ("*.js", &["app.js", "index.js"], &["js/index.js"]),
        ("**.js", &["index.js", "js/index.js", "src/js/app.js"], &["index.jsx"]),
        ("docs/*", &["docs/README.md", "docs/file.txt"], &["docs/mona/octocat.txt"]),
        ("docs/**", &["docs/README.md", "docs/mona/octocat.txt"], &["doc/x"]),
        ("docs/**/*.md", &["docs/README.md", "docs/mona/hello-world.md", "docs/a/markdown/file.md"], &["docs/x.txt"]),
        ("**/docs/**", &["docs/hello.md", "dir/docs/my-file.txt", "space/docs/plan/space.doc"], &["mydocs/x"]),
        ("**/README.md", &["README.md", "js/README.md"], &["README.mdx"]),
        ("**/*src/**", &["a/src/app.js", "my-src/code/js/app.js"], &["src.js"]),
        ("**/*-post.md", &["my-post.md", "path/their-post.md"], &["post.md"]),
        ("**/migrate-*.sql", &["migrate-10909.sql", "db/migrate-v1.0.sql", "db/sept/migrate-v1.sql"], &["migrate.sql"]),
        ("release\\*", &["release*"], &["release1"]),
    ];

    #[test]
    fn cheat_sheet() {
        for (pattern, yes, no) in CHEAT_SHEET {
            let p = Pattern::new(pattern).expect("valid");
            for text in *yes {
                assert!(p.matches(text), "{pattern} should match {text}");
            }
            for text in *no {
                assert!(!p.matches(text), "{pattern} should not match {text}");
            }
        }
    }

    #[test]
    fn negation_order_matters() {
        let list = FilterList::new(&["*.md", "!README.md"]).expect("valid");
        assert!(list.includes("hello.md"));
        assert!(!list.includes("README.md") && !list.includes("docs/hello.md"));
        let list = FilterList::new(&["*.md", "!README.md", "README*"]).expect("valid");
        for text in ["hello.md", "README.md", "README.doc"] {
            assert!(list.includes(text), "{text}");
        }
    }

    #[test]
    fn invalid_patterns() {
        for bad in ["[abc", "[]", "[z-a]", "?x", "a\\", "**+"] {
            assert!(Pattern::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let p = Pattern::new(&"*a".repeat(30)).expect("valid");
        assert!(!p.matches(&"a".repeat(29)));
        let p = Pattern::new(&"**a".repeat(30)).expect("valid");
        assert!(!p.matches(&"a".repeat(29)));
    }
}
