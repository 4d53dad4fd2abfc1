#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every document stands alone. In README.md and docs/*.md:
//! - each relative link (`[text](path)`, `[text](path#anchor)`, `[name]: path`) names a file
//!   or directory of the repository, and an anchor names a heading of the Markdown file it
//!   points into (as GitHub makes anchors of headings);
//! - each Markdown file named in the text (`docs/safety.md`, `` `profiles.md` ``) exists, relative
//!   to the document or to the repository root: a document must not send its reader to notes
//!   that are not in the repository.
//!
//! Web links (http, https, mailto) are not checked: the test suite works offline.

use imgscrub_testkit::repo_root;
use std::path::{Path, PathBuf};

/// README.md and every docs/*.md.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The text without fenced code blocks (their content is not Markdown).
fn without_fences(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The text without inline code spans (a link inside backticks is not a link).
fn without_code_spans(text: &str) -> String {
    let mut out = String::new();
    let mut in_code = false;
    for c in text.chars() {
        if c == '`' {
            in_code = !in_code;
        } else if !in_code {
            out.push(c);
        }
    }
    out
}

/// Link targets: inline links and images `](target)`, and reference definitions
/// `[name]: target`, with (line number, target).
fn links(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in without_fences(markdown).lines().enumerate() {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            // `[text](<path>)` and `[text](path "title")`.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            out.push((i + 1, target.to_owned()));
            rest = &after[end..];
        }
        let t = line.trim_start();
        if t.starts_with('[')
            && let Some(close) = t.find("]:")
            && let Some(target) = t[close + 2..].split_whitespace().next()
        {
            out.push((i + 1, target.to_owned()));
        }
    }
    out
}

/// The anchors GitHub gives the headings of a Markdown file: lower case, punctuation other
/// than `-` and `_` dropped, spaces made `-`; a repeated heading gets `-1`, `-2`…
fn anchors(markdown: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for line in without_fences(markdown).lines() {
        let t = line.trim_start();
        if !t.starts_with('#') {
            continue;
        }
        let title = t.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.iter().filter(|s| **s == slug).count();
        seen.push(slug.clone());
        out.push(if n == 0 { slug } else { format!("{slug}-{n}") });
    }
    out
}

fn is_web(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// What is wrong with one link of `doc` (None when it resolves).
fn check_link(doc: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty link".into());
    }
    if is_web(target) {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        doc.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        repo_root().join(from_root)
    } else {
        doc.parent().unwrap().join(path)
    };
    if !file.exists() {
        return Some(format!("{target}: no such file in the repository"));
    }
    match anchor {
        Some(a) if file.extension().is_some_and(|e| e == "md") => {
            let text = std::fs::read_to_string(&file).unwrap();
            (!anchors(&text).iter().any(|h| h == a))
                .then(|| format!("{target}: no heading with anchor #{a}"))
        }
        _ => None,
    }
}

/// Markdown files named anywhere in the text (in links, code spans or plain words), with
/// (line number, name). Web addresses are left out.
fn md_mentions(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        for word in line.split(|c: char| {
            c.is_whitespace() || matches!(c, '`' | '(' | ')' | '[' | ']' | '<' | '>' | ',' | ';')
        }) {
            if word.contains("://") {
                continue;
            }
            let word = word.trim_end_matches(['.', ':', '!', '?', '"', '\'', '*']);
            let word = word.trim_start_matches(['"', '\'', '*']);
            let word = word.split('#').next().unwrap_or("");
            let Some(stem) = word.strip_suffix(".md") else {
                continue;
            };
            if !stem.is_empty()
                && stem
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
            {
                out.push((i + 1, word.to_owned()));
            }
        }
    }
    out
}

fn mention_exists(doc: &Path, name: &str) -> bool {
    let name = name.trim_start_matches('/');
    doc.parent().unwrap().join(name).exists() || repo_root().join(name).exists()
}

#[test]
fn every_relative_link_resolves() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(repo_root()).unwrap().display().to_string();
        for (line, target) in links(&text) {
            checked += 1;
            if let Some(why) = check_link(&doc, &target) {
                bad.push(format!("{name}:{line}: {why}"));
            }
        }
    }
    assert!(bad.is_empty(), "dead links:\n{}", bad.join("\n"));
    // The documents do link to each other: a parser that found nothing would prove nothing.
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn every_markdown_file_named_exists() {
    let mut bad = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(repo_root()).unwrap().display().to_string();
        for (line, file) in md_mentions(&text) {
            if !mention_exists(&doc, &file) {
                bad.push(format!("{name}:{line}: {file} is not in the repository"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "documents naming files the repository does not have (restate what they need in docs/):\n{}",
        bad.join("\n")
    );
}

/// The checker itself: it finds links in their forms, resolves them, and catches a dead file,
/// a dead anchor and a mention of a missing note.
#[test]
fn the_checker_catches_dead_links() {
    let md = "# Title\n\nSee [a](safety.md), [b](safety.md#nope \"t\"), ![i](<img.png>),\n\
              `[not](a-link.md)` and [web](https://example.com/x.md).\n\n\
              ```\n[fenced](nope.md)\n```\n[ref]: ../README.md\n## Exit status\n## Exit status\n";
    let found: Vec<String> = links(md).into_iter().map(|(_, t)| t).collect();
    assert_eq!(
        found,
        [
            "safety.md",
            "safety.md#nope",
            "img.png",
            "https://example.com/x.md",
            "../README.md"
        ]
    );
    assert_eq!(anchors(md), ["title", "exit-status", "exit-status-1"]);
    assert_eq!(
        anchors("## The `lx-common` rows, (X1–X14)\n"),
        ["the-lx-common-rows-x1x14"]
    );

    let doc = repo_root().join("docs/operations.md");
    assert_eq!(check_link(&doc, "profiles.md"), None);
    assert_eq!(check_link(&doc, "lx-zones.md#the-linux-rows"), None);
    assert_eq!(check_link(&doc, "../README.md"), None);
    assert_eq!(check_link(&doc, "https://example.com/nope.md"), None);
    assert!(check_link(&doc, "spec/peers.md").is_some());
    assert!(check_link(&doc, "profiles.md#no-such-heading").is_some());
    assert!(check_link(&doc, "#no-such-heading").is_some());

    let mentions: Vec<String> = md_mentions(
        "See `spec/peers.md` §9, docs/safety.md, (DESIGN.md) and https://x.org/a.md; `/var/log/.mdata-image.run`.",
    )
    .into_iter()
    .map(|(_, m)| m)
    .collect();
    assert_eq!(mentions, ["spec/peers.md", "docs/safety.md", "DESIGN.md"]);
    assert!(!mention_exists(&doc, "spec/peers.md"));
    assert!(!mention_exists(&doc, "DESIGN.md"));
    assert!(mention_exists(&doc, "docs/safety.md"));
    assert!(mention_exists(&doc, "profiles.md"));
}
