//! The architecture's module layering: core's top-level modules depend on
//! each other without cycles (ARCHITECTURE.md, "Modules form layers"). A
//! `use crate::x` or `crate::x::…` outside comments is a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of core and the modules it names.
fn dependencies(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |module: String, path: &Path| {
        let code: String = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        text.entry(module).or_default().push_str(&code);
    };
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        add(name.clone(), &p);
                    }
                }
            }
        } else if name != "lib" && path.extension().is_some_and(|x| x == "rs") {
            add(name, &path);
        }
    }
    let modules: BTreeSet<String> = text.keys().cloned().collect();
    let mut deps = BTreeMap::new();
    for (module, code) in &text {
        let mut named = BTreeSet::new();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|w| w.trim().split("::").next().unwrap_or(""))
                    .collect()
            } else {
                vec![rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")]
            };
            for w in words {
                if w != module && modules.contains(w) {
                    named.insert(w.to_owned());
                }
            }
        }
        deps.insert(module.clone(), named);
    }
    deps
}

/// A cycle through `from`, if any (depth-first search).
fn cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for d in deps.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    deps.keys()
        .find_map(|m| visit(m, deps, &mut Vec::new(), &mut done))
}

#[test]
fn core_modules_form_layers_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let deps = dependencies(&src);
    assert!(deps.len() > 20, "core's modules were not found: {deps:?}");
    // The reader sees real edges (so a cycle would be seen).
    assert!(deps["store"].contains("query") && deps["sync"].contains("store"));
    if let Some(c) = cycle(&deps) {
        panic!(
            "core's modules depend on each other in a cycle: {}",
            c.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut deps = BTreeMap::new();
    deps.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    deps.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    deps.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle(&deps).unwrap(), ["a", "b", "c", "a"]);
    deps.insert("c".to_owned(), BTreeSet::new());
    assert!(cycle(&deps).is_none());
}
