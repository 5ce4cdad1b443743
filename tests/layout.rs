//! The module graph of every crate in the workspace has no cycles: between the top-level
//! modules of a crate, and between the sibling submodules of one module (`proxy::relay`
//! and `proxy::rename`, say). Edges are the `crate::…` and `super::…` paths a module's
//! code (not its tests or comments) names. `cargo test --test layout -- --nocapture`
//! prints the graph.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`proxy::relay`) -> source text without comments and test modules.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            if parts == ["lib"] || parts == ["main"] {
                continue;
            }
            out.insert(parts.join("::"), code_of(&path));
        }
    }
    out
}

/// The code of a file: comment lines dropped, everything from `#[cfg(test)]` on cut.
fn code_of(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths `code` (in module `module`) refers to, as full paths.
fn references(module: &str, code: &str) -> BTreeSet<String> {
    let parent: Vec<&str> = module.split("::").collect();
    let parent = &parent[..parent.len() - 1];
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let path: Vec<&str> = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .collect();
            let mut full: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            full.extend(path.iter().map(|s| s.to_string()));
            out.insert(full.join("::"));
        }
    }
    out
}

/// Edges between the nodes `node_of` maps module paths to (self-edges dropped).
fn graph(
    modules: &BTreeMap<String, String>,
    node_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in modules {
        let Some(from) = node_of(module) else {
            continue;
        };
        g.entry(from.clone()).or_default();
        for target in references(module, code) {
            // A path names a module, or an item of one: the longest module prefix wins.
            let mut parts: Vec<&str> = target.split("::").collect();
            let known = loop {
                if parts.is_empty() {
                    break None;
                }
                let candidate = parts.join("::");
                if modules.contains_key(&candidate) {
                    break Some(candidate);
                }
                parts.pop();
            };
            if let Some(to) = known.and_then(|k| node_of(&k)) {
                if to != from {
                    g.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    g
}

/// A cycle in `g`, if there is one.
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == m).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, path) {
                        return Some(c);
                    }
                }
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if !state.contains_key(n.as_str()) {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn check_crate(name: &str, src: &Path) -> Vec<String> {
    let modules = modules(src);
    assert!(
        !modules.is_empty(),
        "{name}: no modules under {}",
        src.display()
    );
    let mut problems = Vec::new();
    let top = graph(&modules, |m| m.split("::").next().map(str::to_owned));
    println!("== {name}: top-level modules");
    for (from, to) in &top {
        println!(
            "{from} -> {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(c) = find_cycle(&top) {
        problems.push(format!("{name}: module cycle {}", c.join(" -> ")));
    }
    let parents: BTreeSet<&str> = modules
        .keys()
        .filter_map(|m| m.rsplit_once("::").map(|(p, _)| p))
        .collect();
    for parent in parents {
        let prefix = format!("{parent}::");
        let siblings = graph(&modules, |m| {
            let rest = m.strip_prefix(&prefix)?;
            Some(rest.split("::").next()?.to_owned())
        });
        if let Some(c) = find_cycle(&siblings) {
            problems.push(format!(
                "{name}: cycle between submodules of {parent}: {}",
                c.join(" -> ")
            ));
        }
    }
    problems
}

#[test]
fn no_module_cycles_in_any_crate_of_the_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for (name, src) in [
        ("rmq-sidecar", root.join("src")),
        ("rmq-injector", root.join("crates/rmq-injector/src")),
        ("rmq-common", root.join("crates/rmq-common/src")),
    ] {
        problems.extend(check_crate(name, &src));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let mut modules = BTreeMap::new();
    modules.insert(
        "config".to_owned(),
        "use crate::annotation::KEY;".to_owned(),
    );
    modules.insert(
        "annotation".to_owned(),
        "use crate::routing::Switch;".to_owned(),
    );
    modules.insert(
        "routing".to_owned(),
        "use crate::config::Config;".to_owned(),
    );
    modules.insert("proxy".to_owned(), "".to_owned());
    modules.insert("proxy::relay".to_owned(), "use super::rename;".to_owned());
    modules.insert(
        "proxy::rename".to_owned(),
        "fn f() { crate::proxy::relay::run() }".to_owned(),
    );
    let top = graph(&modules, |m| m.split("::").next().map(str::to_owned));
    let cycle = find_cycle(&top).expect("config -> annotation -> routing -> config");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    let siblings = graph(&modules, |m| {
        Some(m.strip_prefix("proxy::")?.split("::").next()?.to_owned())
    });
    assert!(find_cycle(&siblings).is_some(), "relay <-> rename");
    modules.insert("proxy::rename".to_owned(), String::new());
    let siblings = graph(&modules, |m| {
        Some(m.strip_prefix("proxy::")?.split("::").next()?.to_owned())
    });
    assert_eq!(find_cycle(&siblings), None);
}

#[test]
fn the_layout_doc_names_every_top_level_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (lib, src) in [
        (root.join("src/lib.rs"), root.join("src")),
        (
            root.join("crates/rmq-injector/src/lib.rs"),
            root.join("crates/rmq-injector/src"),
        ),
        (
            root.join("crates/rmq-common/src/lib.rs"),
            root.join("crates/rmq-common/src"),
        ),
    ] {
        let doc = std::fs::read_to_string(&lib).unwrap();
        let layout = doc
            .split("# Layout")
            .nth(1)
            .unwrap_or_else(|| panic!("{} has no # Layout section", lib.display()));
        for module in modules(&src).keys().filter(|m| !m.contains("::")) {
            assert!(
                layout.contains(&format!("[`{module}`]")),
                "{}: # Layout does not name `{module}`",
                lib.display()
            );
        }
    }
}
