//! No import circle between the top-level modules of `src/`: each may use the ones below it,
//! never one that (through others) uses it back. A circle is how cluster mode once grew into
//! the HTTP-01 responder and the pre-flight; this fails, naming the files, when one comes back.
//!
//! An edge A → B is a `crate::B` path in a file of module A, outside comments and unit tests
//! (`mod tests` inline, or a `tests.rs` file of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Module → module it uses → the files that do.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            found.push(path);
        }
    }
}

/// The code of a source file without its comments and its `mod tests`.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|line| match line.find("//") {
            // A comment, unless the `//` is in a string ("https://…").
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    files(&src, &mut found);
    let module_of = |path: &Path| {
        let relative = path.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        name.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = found.iter().map(|p| module_of(p)).collect();
    let mut graph = Graph::new();
    for path in &found {
        let from = module_of(path);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = code(&fs::read_to_string(path).expect("read a source file"));
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if to != from && modules.contains(&to) {
                let file = path.strip_prefix(&src).unwrap_or(path);
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(file.display().to_string());
            }
        }
    }
    graph
}

/// A path of modules from `from` back to `from`, if any.
fn circle_through(graph: &Graph, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flat_map(|uses| uses.keys()) {
            if next == from {
                let mut circle = path.clone();
                circle.push(next.clone());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_circle_between_top_level_modules() {
    let graph = graph();
    assert!(
        graph.values().map(BTreeMap::len).sum::<usize>() > 20,
        "the scan found almost no edges: is it reading src/?"
    );
    let mut circles = Vec::new();
    let mut reported = BTreeSet::new();
    for module in graph.keys() {
        if reported.contains(module) {
            continue;
        }
        if let Some(circle) = circle_through(&graph, module) {
            reported.extend(circle.iter().cloned());
            let steps: Vec<String> = circle
                .windows(2)
                .map(|pair| {
                    let files: Vec<&str> = graph[&pair[0]][&pair[1]]
                        .iter()
                        .map(String::as_str)
                        .collect();
                    format!("  {} -> {} ({})", pair[0], pair[1], files.join(", "))
                })
                .collect();
            circles.push(format!("{}\n{}", circle.join(" -> "), steps.join("\n")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between modules (plug the lower module in through a small trait \
         instead of importing the higher one):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found() {
    let mut graph = Graph::new();
    let edge = |graph: &mut Graph, from: &str, to: &str| {
        graph
            .entry(from.into())
            .or_default()
            .entry(to.into())
            .or_default()
            .insert(format!("{from}.rs"));
    };
    edge(&mut graph, "acme", "challenge");
    edge(&mut graph, "challenge", "cluster");
    assert_eq!(circle_through(&graph, "acme"), None);
    edge(&mut graph, "cluster", "acme");
    assert_eq!(
        circle_through(&graph, "acme"),
        Some(vec![
            "acme".into(),
            "challenge".into(),
            "cluster".into(),
            "acme".into()
        ])
    );
}
