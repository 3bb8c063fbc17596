//! The module graphs of every crate of more than a few files (`runtime`,
//! `sdk`, `store`, `schema`, `functions`, `testkit`, `bench`, `fuzz`) have
//! no cycle: every file
//! is a module, and a path it names — `crate::a::b::Item`, `super::Item`,
//! `self::child::Item`, or `child::Item` for a `mod child` it declares — is an
//! edge to the deepest module that path reaches. A cycle means two modules
//! that cannot be understood (or moved) one without the other.
//!
//! The parser is deliberately small: comments are dropped, `use` trees with
//! braces are expanded, and everything else is matched by path prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path relative to its crate root: `[]` for `lib.rs`,
/// `["server", "ws"]` for `server/ws.rs`.
type ModPath = Vec<String>;

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.strip_suffix(".rs").expect("a .rs file");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `//` and `/* */` comments (doc links are not imports) and
/// without the contents of string literals.
fn strip(text: &str) -> String {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && next.is_some_and(|n| n != '\\') && bytes.get(i + 2) == Some(&'\'') {
            // A char literal such as '"' or '{'.
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Parses a path tree starting at `s[i..]` (after a leading `prefix::`):
/// `a::b::C`, `a::{b, c::D}`, `*`. Returns every full path it names.
fn parse_tree(s: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    skip_ws(s, i);
    if *i < s.len() && s[*i] == '{' {
        *i += 1;
        loop {
            skip_ws(s, i);
            if *i >= s.len() {
                return;
            }
            if s[*i] == '}' {
                *i += 1;
                break;
            }
            if s[*i] == ',' {
                *i += 1;
                continue;
            }
            let before = *i;
            parse_tree(s, i, prefix.clone(), out);
            // `self as x`, `Item as Alias`: skip the alias.
            skip_ws(s, i);
            if s[*i..].starts_with(&['a', 's']) && s.get(*i + 2).is_some_and(|c| !is_ident(*c)) {
                *i += 2;
                skip_ws(s, i);
                while *i < s.len() && is_ident(s[*i]) {
                    *i += 1;
                }
            }
            if *i == before {
                *i += 1;
            }
        }
        out.push(prefix);
        return;
    }
    let start = *i;
    while *i < s.len() && is_ident(s[*i]) {
        *i += 1;
    }
    if start == *i {
        out.push(prefix);
        return;
    }
    let mut path = prefix;
    path.push(s[start..*i].iter().collect());
    if s.get(*i) == Some(&':') && s.get(*i + 1) == Some(&':') {
        *i += 2;
        parse_tree(s, i, path, out);
    } else {
        out.push(path);
    }
}

fn skip_ws(s: &[char], i: &mut usize) {
    while *i < s.len() && s[*i].is_whitespace() {
        *i += 1;
    }
}

/// The child modules `text` declares (`mod x;`, `pub mod x;`, `mod x {`).
fn declared_children(text: &str) -> BTreeSet<String> {
    let mut children = BTreeSet::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(at + 1) {
                let name = name.trim_end_matches([';', '{']);
                if !name.is_empty() && name.chars().all(is_ident) {
                    children.insert(name.to_string());
                }
            }
        }
    }
    children
}

/// Every path `text` (a file of module `me`) names that starts at a module of
/// its own crate, resolved to an absolute module path (not yet cut to a file).
fn crate_paths(me: &ModPath, text: &str) -> Vec<Vec<String>> {
    let children = declared_children(text);
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    // Inline modules (`mod tests { .. }`) open at a brace depth; inside one,
    // `self` and `super` are relative to it.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, at)| *at == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        let here: ModPath = me
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        let boundary = i == 0 || !(is_ident(s[i - 1]) || s[i - 1] == ':' || s[i - 1] == '$');
        if !boundary || !is_ident(s[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let word: String = s[start..i].iter().collect();
        if word == "mod" {
            let mut j = i;
            skip_ws(&s, &mut j);
            let name_start = j;
            while j < s.len() && is_ident(s[j]) {
                j += 1;
            }
            let name: String = s[name_start..j].iter().collect();
            skip_ws(&s, &mut j);
            if !name.is_empty() && s.get(j) == Some(&'{') {
                inline.push((name, depth));
                depth += 1;
                i = j + 1;
            }
            continue;
        }
        if !(s.get(i) == Some(&':') && s.get(i + 1) == Some(&':')) {
            continue;
        }
        let base: Option<Vec<String>> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "self" => Some(here.clone()),
            "super" => {
                // `super::super::…`
                let mut base = here.clone();
                base.pop();
                let mut j = i + 2;
                while s[j..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                    base.pop();
                    j += 7;
                }
                i = j - 2;
                Some(base)
            }
            w if children.contains(w) && inline.is_empty() => {
                let mut base = me.clone();
                base.push(w.to_string());
                Some(base)
            }
            _ => None,
        };
        let Some(base) = base else { continue };
        i += 2;
        let mut paths = Vec::new();
        parse_tree(&s, &mut i, base, &mut paths);
        out.extend(paths);
    }
    out
}

/// The module graph of one crate's `src`: module → modules it names.
fn graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<ModPath, PathBuf> = files
        .iter()
        .map(|f| (module_path(src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for (me, file) in &modules {
        let text = strip(&fs::read_to_string(file).expect("a readable file"));
        let mut edges = BTreeSet::new();
        for mut path in crate_paths(me, &text) {
            // The deepest module the path reaches.
            while !path.is_empty() && !modules.contains_key(&path) {
                path.pop();
            }
            // A module naming itself, or one of its own submodules (a
            // parent declares and re-exports its children: containment,
            // not dependency), is no edge; a child naming its parent is.
            if !path.starts_with(me) {
                edges.insert(path);
            }
        }
        graph.insert(me.clone(), edges);
    }
    graph
}

/// One cycle of `graph`, if it has any, as the modules around it.
fn find_cycle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> Option<Vec<ModPath>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack.iter().position(|n| n == node).expect("on the stack");
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.clone());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn show(cycle: &[ModPath]) -> String {
    cycle
        .iter()
        .map(|m| {
            if m.is_empty() {
                "crate".to_string()
            } else {
                m.join("::")
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn assert_acyclic(krate: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("src");
    let graph = graph(&src);
    assert!(
        graph.len() > 5,
        "{krate}/src: found only {} modules",
        graph.len()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("{krate}/src has a module import cycle: {}", show(&cycle));
    }
}

#[test]
fn the_runtime_has_no_module_import_cycle() {
    assert_acyclic("runtime");
}

#[test]
fn the_sdk_has_no_module_import_cycle() {
    assert_acyclic("sdk");
}

#[test]
fn the_other_crates_have_no_module_import_cycle() {
    for krate in ["store", "schema", "functions", "testkit", "bench", "fuzz"] {
        assert_acyclic(krate);
    }
}

/// The checker finds a cycle when there is one — through `crate::` paths,
/// brace groups, `super::` and a declared child — and none when there is not.
#[test]
fn the_checker_sees_cycles_of_every_path_form() {
    let dir = tempfile_dir();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    write("a.rs", "use crate::{b::{self, Thing}, c, d::e::Y};\n");
    write("d/mod.rs", "pub mod e;\n");
    // Inside an inline module, `super` starts from it: this names `d`.
    write(
        "d/e.rs",
        "pub struct Y;\n#[cfg(test)]\nmod tests {\n    use super::super::a;\n}\n",
    );
    write(
        "b.rs",
        "// use crate::a;  (a comment is no import)\npub struct Thing;\n",
    );
    write("c/mod.rs", "mod inner;\npub use inner::X;\n");
    write(
        "c/inner.rs",
        "pub struct X;\nfn f() -> &'static str { \"crate::a\" }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    assert_eq!(find_cycle(&graph(&dir)), None, "no cycle yet");

    write("b.rs", "pub struct Thing;\nfn f() { crate::a::g(); }\n");
    let cycle = find_cycle(&graph(&dir)).expect("a -> b -> a");
    assert_eq!(show(&cycle), "a -> b -> a");

    write("b.rs", "pub struct Thing;\n");
    // A parent re-exporting its child is containment, not a dependency.
    write("c/inner.rs", "use super::super::a;\npub struct X;\n");
    assert_eq!(find_cycle(&graph(&dir)), None, "c::inner -> a only");
    write("a.rs", "use crate::{b::Thing, c::inner::X};\n");
    let cycle = find_cycle(&graph(&dir)).expect("a -> c::inner -> a");
    assert_eq!(show(&cycle), "a -> c::inner -> a");
    fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "livebase-module-cycles-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
