//! Markdown as GitHub renders READMEs (tables, task lists, strikethrough, footnotes, autolinks),
//! made inert: raw HTML in the source is shown as text, never passed through, and a link or image
//! whose address has a scheme other than `http`, `https` or `mailto` (`javascript:`, `data:`,
//! `vbscript:`, …) points nowhere. Relative links go to the file's page in the repository and
//! relative images to its raw bytes, as on GitHub. Everything else is escaped by the renderer.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

/// Where relative addresses of a document resolve: `/{owner}/{repo}/{blob|raw}/{ref}/{dir}`.
pub(crate) struct Base<'a> {
    pub repo: &'a str,
    pub git_ref: &'a str,
    /// The document's directory in the repository (`""` at the root).
    pub dir: &'a str,
}

/// The most bytes of Markdown rendered (a larger README is shown cut, saying so).
pub(crate) const MAX_MARKDOWN: usize = 512 * 1024;

fn safe_scheme(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    // Control characters and spaces inside a scheme are how filters get fooled.
    if lower.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    match lower.find(':') {
        None => true,
        Some(colon) => {
            let before = &lower[..colon];
            // A colon after a '/', '?' or '#' is part of a path, not a scheme.
            before.contains(['/', '?', '#']) || matches!(before, "http" | "https" | "mailto")
        }
    }
}

fn is_relative(url: &str) -> bool {
    !url.contains(':') && !url.starts_with('/') && !url.starts_with('#') && !url.starts_with("//")
}

fn resolve(base: &Base<'_>, url: &str, kind: &str) -> String {
    let (path, fragment) = url.split_once('#').map_or((url, None), |(p, f)| (p, Some(f)));
    let mut parts: Vec<&str> = base.dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let mut out = format!("/{}/{kind}/{}/{}", base.repo, super::enc(base.git_ref), parts.join("/"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The HTML of `source`, safe to put in a page.
pub(crate) fn render(source: &str, base: &Base<'_>) -> String {
    let source = if source.len() > MAX_MARKDOWN {
        let mut end = MAX_MARKDOWN;
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        &source[..end]
    } else {
        source
    };
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_GFM;
    let events = Parser::new_ext(source, options).map(|event| match event {
        // Raw HTML becomes text: shown, never interpreted.
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            let dest_url = if !safe_scheme(&dest_url) {
                CowStr::from("#")
            } else if is_relative(&dest_url) {
                CowStr::from(resolve(base, &dest_url, "blob"))
            } else {
                dest_url
            };
            Event::Start(Tag::Link { link_type, dest_url, title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            let dest_url = if !safe_scheme(&dest_url) {
                CowStr::from("")
            } else if is_relative(&dest_url) {
                CowStr::from(resolve(base, &dest_url, "raw"))
            } else {
                dest_url
            };
            Event::Start(Tag::Image { link_type, dest_url, title, id })
        }
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Base<'static> = Base { repo: "a/b", git_ref: "main", dir: "docs" };

    #[test]
    fn hostile_markdown_is_inert() {
        let html = render(
            "<script>alert(1)</script>\n\n[x](javascript:alert(1)) [y](JaVaScRiPt:alert(2)) [z](java\tscript:x)\n\n\
             ![i](data:text/html,<b>) <img src=x onerror=alert(3)> [ok](https://example.com) [m](mailto:a@b)\n",
            &BASE,
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{html}");
        assert!(!html.contains("data:text/html"), "{html}");
        assert!(html.contains(r#"href="https://example.com""#) && html.contains(r#"href="mailto:a@b""#), "{html}");
    }

    #[test]
    fn relative_addresses_go_to_the_repository() {
        let html = render("[guide](guide.md#setup) [up](../README.md) ![logo](img/logo.png) [top](#a)", &BASE);
        assert!(html.contains(r#"href="/a/b/blob/main/docs/guide.md#setup""#), "{html}");
        assert!(html.contains(r#"href="/a/b/blob/main/README.md""#), "{html}");
        assert!(html.contains(r#"src="/a/b/raw/main/docs/img/logo.png""#), "{html}");
        assert!(html.contains(r##"href="#a""##), "{html}");
    }

    #[test]
    fn github_extensions_render() {
        let html = render("| a | b |\n| - | - |\n| 1 | 2 |\n\n- [x] done\n\n~~old~~", &BASE);
        assert!(html.contains("<table>") && html.contains("checkbox") && html.contains("<del>old</del>"), "{html}");
    }
}
