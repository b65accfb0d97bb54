//! The documentation stands on its own: every link of the README and of
//! docs/*.md reaches a file of the repository (and, with `#anchor`, a
//! heading of it), and no page points a reader to a specification they
//! do not have.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// README.md and every docs/*.md, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let root = repo_root();
    let mut paths = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.into_iter().map(|path| (path.clone(), std::fs::read_to_string(&path).unwrap())).collect()
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of inline links `[text](target)` and of reference
/// definitions `[label]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
        if let Some(definition) = line.strip_prefix('[').and_then(|l| l.split_once("]: ")) {
            targets.push(definition.1.trim().to_owned());
        }
    }
    targets
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings, repeated ones numbered as GitHub does.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    prose(text)
        .filter_map(|line| line.strip_prefix('#').map(|h| h.trim_start_matches('#')))
        .map(|heading| {
            let base = slug(heading);
            let count = seen.entry(base.clone()).or_insert(0);
            let anchor = if *count == 0 { base.clone() } else { format!("{base}-{count}") };
            *count += 1;
            anchor
        })
        .collect()
}

/// What is wrong with one link of `page`, if anything.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.starts_with("http://")
        || target.starts_with("https://")
        || target.starts_with("mailto:")
    {
        return None;
    }
    let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
    let path = if file.is_empty() { page.to_path_buf() } else { page.parent()?.join(file) };
    if !path.exists() {
        return Some(format!("{target}: no file {}", path.display()));
    }
    if anchor.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    (!anchors(&text).iter().any(|a| a == anchor))
        .then(|| format!("{target}: no heading with the anchor #{anchor} in {}", path.display()))
}

#[test]
fn every_link_of_the_readme_and_docs_reaches_a_file_and_heading() {
    let pages = pages();
    let mut problems = Vec::new();
    let mut checked = 0;

    for (page, text) in &pages {
        for target in link_targets(text) {
            checked += 1;
            if let Some(problem) = broken(page, &target) {
                problems.push(format!("{}: {problem}", page.display()));
            }
        }
    }

    assert!(pages.len() >= 8 && checked >= 30, "{} pages, {checked} links", pages.len());
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn no_page_refers_to_spec_sections() {
    let offending: Vec<String> = pages()
        .iter()
        .flat_map(|(page, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| line.contains("SPEC §"))
                .map(move |(n, line)| format!("{}:{}: {line}", page.display(), n + 1))
        })
        .collect();

    assert!(offending.is_empty(), "{}", offending.join("\n"));
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let root = repo_root();
    let readme = root.join("README.md");

    assert_eq!(broken(&readme, "docs/api.md"), None);
    assert_eq!(broken(&readme, "docs/api.md#values-the-server-clamps"), None);
    assert_eq!(broken(&readme, "#the-original-service"), None);
    assert_eq!(broken(&readme, "LICENSE"), None);
    assert!(broken(&readme, "docs/nope.md").is_some());
    assert!(broken(&readme, "docs/api.md#no-such-heading").is_some());
    assert_eq!(slug("POST /v1/codeq/tasks/{id}/result"), "post-v1codeqtasksidresult");
    assert_eq!(
        slug("What works today, and what does not yet"),
        "what-works-today-and-what-does-not-yet"
    );
    assert_eq!(anchors("# A\n## A\n```\n# not a heading\n```\n"), ["a", "a-1"]);
    assert_eq!(link_targets("[x](a.md#b) and [y](c.md)\n[ref]: d.md"), ["a.md#b", "c.md", "d.md"]);
}
