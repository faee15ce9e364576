//! The crate's layering, checked from its sources: arrows between top-level modules point one
//! way, and the core names no integration and no HTTP, server or protocol crate.
//!
//! A top-level module is a `mod` declared in `src/lib.rs`, with all its files. Module `a` depends
//! on module `b` when code in `a` (comments and doc comments left out, tests included) names
//! `crate::b`, or an item that `src/lib.rs` re-exports from `b`. Print the graph with
//!
//! ```text
//! cargo test --test layers -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The core: what every admission point shares. It depends on nothing below.
const CORE: &[&str] = &[
    "ban",
    "cidr",
    "cidr_table",
    "clock",
    "error",
    "fair_share",
    "key",
    "keys",
    "limiter",
    "limits",
    "rate",
    "reason",
    // The unit tests' helpers, which name nothing.
    "testing",
];

/// Above the core: the one `Config`, which nests each integration's settings.
const COMPOSITION: &[&str] = &["config"];

/// Crates the core must never name: HTTP, servers, RPC, protocols, tower.
const NOT_IN_CORE: &[&str] = &[
    "http",
    "http_body",
    "hyper",
    "hyper_util",
    "axum",
    "tonic",
    "ppp",
    "tower",
    "tower_layer",
    "tower_service",
    "redis",
    "notify",
];

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = Graph::read(&src());
    graph.print();
    let cycles = graph.cycles();
    assert!(
        cycles.is_empty(),
        "cycles between top-level modules: {cycles:?}"
    );
}

#[test]
fn the_core_names_no_integration_and_no_http_crate() {
    let graph = Graph::read(&src());
    let integrations: BTreeSet<&str> = graph
        .modules
        .keys()
        .map(String::as_str)
        .filter(|m| !CORE.contains(m))
        .collect();
    for core in CORE {
        assert!(graph.modules.contains_key(*core), "no core module {core}");
        for used in &graph.modules[*core].uses {
            assert!(
                !integrations.contains(used.as_str()),
                "core module {core} names {used}"
            );
        }
        for krate in &graph.modules[*core].crates {
            assert!(
                !NOT_IN_CORE.contains(&krate.as_str()),
                "core module {core} names the crate {krate}"
            );
        }
    }
}

#[test]
fn paths_between_modules_are_all_seen() {
    // The graph sees `crate::` paths; these would reach another module unseen.
    for file in files_under(&src()) {
        let code = code_of(&fs::read_to_string(&file).unwrap());
        for hidden in ["super::super", "crate::*", "use crate::{*"] {
            assert!(!code.contains(hidden), "{} uses {hidden}", file.display());
        }
        for krate in NOT_IN_CORE {
            assert!(
                !code.contains(&format!("use {krate} as ")),
                "{} renames {krate}",
                file.display()
            );
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    collect_rs(dir, &mut files);
    files
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

struct Module {
    /// Top-level modules this one names.
    uses: BTreeSet<String>,
    /// External crates this one names in paths.
    crates: BTreeSet<String>,
    /// Lines of code outside `#[cfg(test)]` modules, comments and blank lines left out.
    code_lines: usize,
}

struct Graph {
    modules: BTreeMap<String, Module>,
}

impl Graph {
    fn read(src: &Path) -> Graph {
        let lib = code_of(&fs::read_to_string(src.join("lib.rs")).unwrap());
        let names = module_names(&lib);
        let exports = root_exports(&lib, &names);
        let mut modules = BTreeMap::new();
        for name in &names {
            let mut files = Vec::new();
            let file = src.join(format!("{name}.rs"));
            if file.exists() {
                files.push(file);
            }
            collect_rs(&src.join(name), &mut files);
            let mut uses = BTreeSet::new();
            let mut crates = BTreeSet::new();
            let mut code_lines = 0;
            for file in files {
                let code = code_of(&fs::read_to_string(&file).unwrap());
                code_lines += non_test_lines(&code);
                for path in crate_paths(&code) {
                    let target = if names.contains(&path) {
                        Some(path)
                    } else {
                        exports.get(&path).cloned()
                    };
                    if let Some(target) = target.filter(|t| t != name) {
                        uses.insert(target);
                    }
                }
                crates.extend(extern_paths(&code));
            }
            modules.insert(
                name.clone(),
                Module {
                    uses,
                    crates,
                    code_lines,
                },
            );
        }
        Graph { modules }
    }

    fn print(&self) {
        println!("top-level module -> the modules it names  [lines of non-test code]");
        for (name, module) in &self.modules {
            let layer = if CORE.contains(&name.as_str()) {
                "core"
            } else if COMPOSITION.contains(&name.as_str()) {
                "composition"
            } else {
                "integration"
            };
            let uses: Vec<&str> = module.uses.iter().map(String::as_str).collect();
            println!(
                "{name:>14} ({layer:<11}) -> {}  [{}]",
                uses.join(", "),
                module.code_lines
            );
        }
    }

    /// Every cycle, as the modules of a strongly connected component of more than one module.
    fn cycles(&self) -> Vec<Vec<String>> {
        let names: Vec<&String> = self.modules.keys().collect();
        let reaches = |from: &str, to: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.to_owned()];
            while let Some(m) = stack.pop() {
                if !seen.insert(m.clone()) {
                    continue;
                }
                for next in &self.modules[&m].uses {
                    if next == to {
                        return true;
                    }
                    stack.push(next.clone());
                }
            }
            false
        };
        let mut cycles: Vec<Vec<String>> = Vec::new();
        for a in &names {
            if cycles.iter().any(|c| c.contains(a)) {
                continue;
            }
            let component: Vec<String> = names
                .iter()
                .filter(|b| a == *b || (reaches(a, b) && reaches(b, a)))
                .map(|b| (*b).clone())
                .collect();
            if component.len() > 1 {
                cycles.push(component);
            }
        }
        cycles
    }
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The source without comments (line, block and doc comments) and string literals' contents.
fn code_of(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        if source[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if source[i..].starts_with("/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if source[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if source[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if bytes[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if bytes[i] == b'"' && !is_char_literal(bytes, i) {
            // A string literal: keep the quotes and line breaks, drop the rest, but for a path in
            // an attribute (`deserialize_with = "crate::rate::..."`), which is code.
            out.push('"');
            i += 1;
            let keep = source[i..].starts_with("crate::");
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    i += 1;
                } else if bytes[i] == b'\n' {
                    out.push('\n');
                } else if keep {
                    out.push(char::from(bytes[i]));
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else {
            let c = source[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether the `"` at `i` is the character literal `'"'`.
fn is_char_literal(bytes: &[u8], i: usize) -> bool {
    i > 0 && bytes[i - 1] == b'\'' && bytes.get(i + 1) == Some(&b'\'')
}

/// Lines of code before the first `#[cfg(test)]`, blank lines left out.
fn non_test_lines(code: &str) -> usize {
    code.lines()
        .take_while(|line| !line.trim_start().starts_with("#[cfg(test)]"))
        .filter(|line| !line.trim().is_empty())
        .count()
}

/// The modules `src/lib.rs` declares.
fn module_names(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            let name = rest.strip_suffix(';')?.trim();
            Some(name.to_owned())
        })
        .collect()
}

/// Each name `src/lib.rs` re-exports from one of its modules, with that module.
fn root_exports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut exports = BTreeMap::new();
    for statement in lib.split(';') {
        let statement = statement.trim();
        let Some(at) = statement.find("use ") else {
            continue;
        };
        let path = statement[at + 4..].replace(char::is_whitespace, "");
        let path = path.strip_prefix("self::").unwrap_or(&path);
        let path = path.strip_prefix("crate::").unwrap_or(path);
        let Some((module, rest)) = path.split_once("::") else {
            continue;
        };
        if !modules.contains(module) {
            continue;
        }
        for leaf in leaves(rest) {
            exports.insert(leaf, module.to_owned());
        }
    }
    exports
}

/// The last segment of every path in a `use` tree such as `a::{B, c::D}`.
fn leaves(tree: &str) -> Vec<String> {
    let tree = tree.trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut push = |part: &str| {
        let part = part.trim();
        if part.is_empty() {
            return;
        }
        if let Some((_, inner)) = part.split_once('{') {
            out.extend(leaves(&format!("{{{inner}")));
        } else {
            let last = part.rsplit("::").next().unwrap();
            let last = last.split(" as ").last().unwrap().trim();
            out.push(last.to_owned());
        }
    };
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&tree[start..]);
    out
}

/// The first segment after every `crate::` in `code`, including each one in a `crate::{..}`
/// group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if rest.starts_with('{') {
            let end = matching_brace(rest);
            for path in leaves_first_segments(&rest[1..end]) {
                out.push(path);
            }
        } else {
            out.push(ident_at(rest));
        }
    }
    out
}

/// The first segment of every path in a use-tree group's contents.
fn leaves_first_segments(group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident_at(group[start..i].trim()));
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = group[start..].trim();
    if !last.is_empty() {
        out.push(ident_at(last));
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// External crates named at the start of a path (`name::`), among those the core must avoid.
fn extern_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for krate in NOT_IN_CORE {
        let needle = format!("{krate}::");
        let mut rest = code;
        while let Some(at) = rest.find(&needle) {
            let before = &rest[..at];
            rest = &rest[at + needle.len()..];
            let ident_char = |c: char| c.is_alphanumeric() || c == '_';
            // `foo_http::` is another name, and `a::http::` a path inside `a`; `::http::` and
            // `http::` name the crate.
            let joined = before.chars().next_back().is_some_and(ident_char);
            let inner = before
                .strip_suffix("::")
                .is_some_and(|b| b.chars().next_back().is_some_and(ident_char));
            if !joined && !inner {
                out.insert((*krate).to_owned());
            }
        }
    }
    out
}
