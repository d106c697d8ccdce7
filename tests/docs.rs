//! The docs stay true to the binary and to themselves: the flags table of `docs/api.md` lists
//! exactly the flags of `edgecomet --help` (aliases included), with the same defaults (units
//! and all: `30s`, `1MiB`), and every relative link in
//! the README and the docs points at a file that exists (and, with `#anchor`, at a heading of
//! that file). Reads files and runs `--help`; starts no server.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The markdown files whose links are checked, relative to the repository root; every `.md`
/// file directly in `docs/` is added.
const LINKED_DOCS: &[&str] = &["README.md", "flood-client/README.md", "bench/RESULTS.md"];

/// Table cells that mean "no default" (a switch, or an option that is unset unless given).
const NO_DEFAULT: &[&str] = &["", "none", "off"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Flag → its `[default: …]` from `--help` (`None` for switches and unset options).
fn help_flags() -> BTreeMap<String, Option<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
        .arg("--help")
        .output()
        .expect("run edgecomet --help");
    assert!(out.status.success(), "edgecomet --help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let t = line.trim_start();
        // An option line: `--name <VALUE>`, `--switch`, or `-h, --help`.
        let opt = t.strip_prefix("--").or_else(|| {
            t.starts_with('-')
                .then(|| t.split_once(", --").map(|(_, rest)| rest))
                .flatten()
        });
        if let Some(rest) = opt.filter(|_| line.starts_with("  ")) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let name = format!("--{name}");
            flags.insert(name.clone(), None);
            current = Some(name);
        } else if let Some(name) = &current {
            if let Some((_, d)) = t.rsplit_once("[default: ") {
                // `[default: X]`, possibly followed by `[possible values: …]`.
                let d = d.split_once(']').map_or(d, |(d, _)| d).to_string();
                flags.insert(name.clone(), Some(d));
            }
            // `[alias: --old-name]` / `[aliases: --a, --b]`: each a row of its own in the
            // table (or a name in the flag's row), with the flag's default.
            for tag in ["[alias: ", "[aliases: "] {
                if let Some((_, list)) = t.split_once(tag) {
                    let list = list.split(']').next().unwrap_or("");
                    for alias in list.split(", ") {
                        let alias = format!("--{}", alias.trim().trim_start_matches("--"));
                        let default = flags.get(name).cloned().flatten();
                        flags.insert(alias, default);
                    }
                }
            }
        }
    }
    assert!(
        flags.len() > 10,
        "parsed only {} flags from --help: {flags:?}",
        flags.len()
    );
    flags
}

/// The cells of a markdown table row (`| a | b |`), `\|` kept inside a cell.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// The default a table cell states: the first code span if the cell starts with one
/// ("`0` = one per core"), else the first word ("64 (≤ 128)"); `None` for "none", "off", empty.
fn cell_default(cell: &str) -> Option<String> {
    let d = match cell.strip_prefix('`') {
        Some(rest) => rest.split('`').next().unwrap_or(""),
        None => cell.split_whitespace().next().unwrap_or(""),
    };
    (!NO_DEFAULT.contains(&d)).then(|| d.to_string())
}

/// Flag → the default its row states, from the table under `## Flags` in `docs/api.md`.
fn table_flags() -> BTreeMap<String, Option<String>> {
    let api = read(&root().join("docs/api.md"));
    let section = api
        .split("\n## ")
        .find(|s| s.starts_with("Flags\n"))
        .expect("docs/api.md has a `## Flags` section");
    let mut flags = BTreeMap::new();
    let mut header_seen = false;
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let row = cells(line);
        if !header_seen {
            assert_eq!(
                row[..2],
                ["Flag", "Default"],
                "the flags table starts with | Flag | Default | …"
            );
            header_seen = true;
            continue;
        }
        if row[0].starts_with("---") {
            continue;
        }
        // `--name ARG`, or `-h`, `--help`: every long flag named in the first cell.
        let names: Vec<&str> = row[0]
            .split('`')
            .filter_map(|span| span.split_whitespace().next())
            .filter(|w| w.starts_with("--"))
            .collect();
        assert!(!names.is_empty(), "a flags row without a flag: {line}");
        let default = cell_default(row.get(1).map_or("", |s| s));
        for name in names {
            let previous = flags.insert(name.to_string(), default.clone());
            assert!(previous.is_none(), "{name} has two rows in docs/api.md");
        }
    }
    flags
}

#[test]
fn flags_table_in_api_md_matches_help() {
    let help = help_flags();
    let table = table_flags();
    let mut problems = Vec::new();
    for (name, default) in &help {
        match table.get(name) {
            None => problems.push(format!(
                "{name}: in --help, missing from docs/api.md's table"
            )),
            Some(d) if d != default => problems.push(format!(
                "{name}: docs/api.md says default {}, --help says {}",
                d.as_deref().unwrap_or("none"),
                default.as_deref().unwrap_or("none")
            )),
            Some(_) => {}
        }
    }
    for name in table.keys().filter(|n| !help.contains_key(*n)) {
        problems.push(format!("{name}: in docs/api.md's table, not in --help"));
    }
    assert!(problems.is_empty(), "flags table:\n{}", problems.join("\n"));
}

/// GitHub's anchor for a heading: lower case, only letters, digits, `-`, `_` and spaces kept,
/// spaces turned into `-`; a repeated heading gets `-1`, `-2`, ….
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in without_code_blocks(markdown).lines() {
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The text outside fenced code blocks (their `[..](..)` are shell and JSON, not links).
fn without_code_blocks(markdown: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The targets of the inline links `[text](target)` in a markdown text.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = without_code_blocks(markdown);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].trim().to_string());
        }
    }
    out
}

#[test]
fn relative_links_in_readme_and_docs_resolve() {
    let root = root();
    let mut files: Vec<PathBuf> = LINKED_DOCS.iter().map(|p| root.join(p)).collect();
    for entry in fs::read_dir(root.join("docs")).expect("read docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = read(file);
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let shown = format!(
                "{}: ({target})",
                file.strip_prefix(&root).unwrap().display()
            );
            if !dest.exists() {
                broken.push(format!("{shown}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                if dest.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&dest)).contains(anchor)
                {
                    broken.push(format!("{shown}: no heading with this anchor"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rules() {
    let md = "# Title\n## `/stats`\n## Several processes, one command: `--processes P`\n\
              ## flood: edgecomet and nginx + nchan at 15,000 connections\n## Tests\n## Tests\n\
              ```\n# not a heading\n```\n#nope\n";
    let got: Vec<String> = anchors(md).into_iter().collect();
    assert_eq!(
        got,
        [
            "flood-edgecomet-and-nginx--nchan-at-15000-connections",
            "several-processes-one-command---processes-p",
            "stats",
            "tests",
            "tests-1",
            "title"
        ]
    );
}
