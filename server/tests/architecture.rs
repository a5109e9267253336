//! The server's module map holds its shape: imports flow one way, and no file does six jobs.
//!
//! Reads `server/src` as text. A file depends on another when it names it in a path (`use
//! crate::…`, `super::…`, `self::…`, a child module, or a `crate::…` path inside code); test
//! modules do not count. Rules (see README, "Architecture"):
//!
//! - no dependency cycle between files, except one type whose `impl` is split across two files
//!   of one folder (the struct in one, more of its methods in the other);
//! - no file over [`MAX_LINES`] lines, tests aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

/// A source file: its module path (`["campaigns", "writer"]`) and its code without tests.
struct Source {
    module: Vec<String>,
    /// Lines before the tests.
    lines: usize,
    code: String,
}

fn sources(root: &Path) -> BTreeMap<String, Source> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => &text[..at],
                    None => &text,
                };
                let lines = code.lines().count();
                // Comments (doc links included) are not dependencies.
                let code: String = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .flat_map(|l| [l, "\n"])
                    .collect();
                let mut module: Vec<String> = rel
                    .trim_end_matches(".rs")
                    .split('/')
                    .map(String::from)
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                files.insert(
                    rel,
                    Source {
                        module,
                        lines,
                        code,
                    },
                );
            }
        }
    }
    files
}

/// Every path a `use` item names, braces expanded: `a::{b, c::{d, e}}` → a::b, a::c::d, a::c::e.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap().trim().to_owned()];
    };
    let prefix = &tree[..open];
    let Some(close) = tree.rfind('}') else {
        return Vec::new();
    };
    let inner = &tree[open + 1..close];
    let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p).into_iter().map(|e| format!("{prefix}{e}")))
        .collect()
}

/// Paths named by a file, as module-path segments from the crate root.
fn named_paths(source: &Source) -> Vec<Vec<String>> {
    let code = &source.code;
    let children: BTreeSet<&str> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';')
        })
        .collect();
    let resolve = |path: &str| -> Option<Vec<String>> {
        let mut segments: Vec<&str> = path.split("::").map(str::trim).collect();
        let mut base: Vec<String> = match segments.first().copied()? {
            "crate" => Vec::new(),
            "self" => source.module.clone(),
            "super" => {
                let mut base = source.module.clone();
                while segments.first() == Some(&"super") {
                    base.pop();
                    segments.remove(0);
                }
                segments.insert(0, "super");
                base
            }
            child if children.contains(child) => {
                segments.insert(0, "self");
                source.module.clone()
            }
            _ => return None,
        };
        base.extend(segments[1..].iter().map(|s| s.to_string()));
        Some(base)
    };
    let mut paths = Vec::new();
    // `use` items (relative first segments allowed), each from a line that starts one.
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        let visible = ["pub use ", "pub(crate) use ", "pub(super) use ", "use "];
        let Some(item) = visible.iter().find_map(|p| line.strip_prefix(p)) else {
            continue;
        };
        let mut item = item.to_owned();
        while !item.contains(';') {
            match lines.next() {
                Some(more) => item.push_str(more),
                None => break,
            }
        }
        let item = item.split(';').next().unwrap_or_default();
        for path in expand(item) {
            paths.extend(resolve(&path));
        }
    }
    // Inline paths in code.
    for start in ["crate::", "super::", "self::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at..];
            let len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..len].trim_end_matches(':');
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                paths.extend(resolve(path));
            }
            rest = &rest[len.max(1)..];
        }
    }
    paths
}

/// Which file each file depends on.
fn dependencies(files: &BTreeMap<String, Source>) -> BTreeMap<&str, BTreeSet<&str>> {
    let by_module: BTreeMap<&[String], &str> = files
        .iter()
        .map(|(rel, s)| (s.module.as_slice(), rel.as_str()))
        .collect();
    files
        .iter()
        .map(|(rel, source)| {
            let deps = named_paths(source)
                .into_iter()
                .filter_map(|path| {
                    (0..=path.len())
                        .rev()
                        .find_map(|n| by_module.get(&path[..n]).copied())
                })
                .filter(|dep| *dep != rel.as_str())
                .collect();
            (rel.as_str(), deps)
        })
        .collect()
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct Walk<'a, 'g> {
        graph: &'g BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<&'a str>>,
    }
    impl<'a> Walk<'a, '_> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            for &next in &self.graph[node] {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let at = self.stack.iter().position(|n| *n == node).unwrap();
                let component: Vec<&str> = self.stack.split_off(at);
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for &node in graph.keys() {
        if !walk.index.contains_key(node) {
            walk.visit(node);
        }
    }
    walk.found
}

/// Two files of one folder, one defining a type and the other continuing its `impl`.
fn is_split_type(pair: &[&str], files: &BTreeMap<String, Source>) -> bool {
    let [a, b] = pair else { return false };
    let folder = |f: &str| Path::new(f).parent().map(Path::to_path_buf);
    if folder(a) != folder(b) {
        return false;
    }
    let defines = |f: &str| -> Vec<String> {
        files[f]
            .code
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                let l = l
                    .strip_prefix("pub(super) ")
                    .or_else(|| l.strip_prefix("pub(crate) "))
                    .or_else(|| l.strip_prefix("pub "))
                    .unwrap_or(l);
                let name = l.strip_prefix("struct ")?;
                Some(
                    name.split(|c: char| !c.is_alphanumeric())
                        .next()?
                        .to_owned(),
                )
            })
            .collect()
    };
    let continues = |f: &str, ty: &str| files[f].code.contains(&format!("impl {ty} {{"));
    defines(a).iter().any(|ty| continues(b, ty)) || defines(b).iter().any(|ty| continues(a, ty))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn imports_flow_one_way() {
    let files = sources(&src());
    let graph = dependencies(&files);
    if std::env::var_os("RALLY_PRINT_IMPORTS").is_some() {
        for (file, deps) in &graph {
            eprintln!("{file} -> {deps:?}");
        }
    }
    assert!(
        graph["lib.rs"].len() > 10 && graph["gateway/connection.rs"].contains("campaigns/mod.rs"),
        "the dependency reader finds imports: {:?}",
        graph["gateway/connection.rs"]
    );
    let bad: Vec<Vec<&str>> = cycles(&graph)
        .into_iter()
        .filter(|cycle| !is_split_type(cycle, &files))
        .collect();
    assert!(bad.is_empty(), "import cycles in server/src: {bad:#?}");
}

#[test]
fn no_file_does_six_jobs() {
    let files = sources(&src());
    let long: Vec<(String, usize)> = files
        .iter()
        .map(|(rel, s)| (rel.clone(), s.lines))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (tests aside): {long:?}"
    );
}

#[test]
fn the_reader_sees_a_cycle_when_there_is_one() {
    let files: BTreeMap<String, Source> = [
        ("a.rs", vec!["a"], "use crate::b::{self, Thing};\n"),
        ("b.rs", vec!["b"], "fn f() { crate::a::g(); }\n"),
        ("c/mod.rs", vec!["c"], "mod d;\npub use d::D;\n"),
        ("c/d.rs", vec!["c", "d"], "pub struct D;\n"),
        ("c/e.rs", vec!["c", "e"], "use super::d::D;\nimpl D {\n}\n"),
        ("c/f.rs", vec!["c", "f"], "use super::D;\n"),
    ]
    .into_iter()
    .map(|(rel, module, code)| {
        let module = module.into_iter().map(String::from).collect();
        let code = code.to_owned();
        let lines = code.lines().count();
        (
            rel.to_owned(),
            Source {
                module,
                lines,
                code,
            },
        )
    })
    .collect();
    let graph = dependencies(&files);
    assert_eq!(graph["a.rs"], BTreeSet::from(["b.rs"]));
    assert_eq!(graph["c/mod.rs"], BTreeSet::from(["c/d.rs"]));
    assert_eq!(graph["c/f.rs"], BTreeSet::from(["c/mod.rs"]));
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(!is_split_type(&found[0], &files));
    assert!(is_split_type(&["c/d.rs", "c/e.rs"], &files));
}
