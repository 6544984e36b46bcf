//! The architecture holds by test: the layer table in `docs/ARCHITECTURE.md` (which layer may
//! import which), no source file over 600 lines, no function over 100 lines unless a comment
//! right above it says why ("longer than 100 lines: …").

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;
const LONG_FN_REASON: &str = "longer than 100 lines";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ["domain", "projections", "engine", "bench"] {
        for sub in ["src", "tests", "benches"] {
            rust_files(&root.join(dir).join(sub), &mut files);
        }
    }
    files.sort();
    assert!(files.len() > 50, "found only {} sources", files.len());
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace())
        .expect("inside the workspace")
        .to_string_lossy()
        .replace('\\', "/")
}

/// The rows of the layer table: folder -> the folders it may import.
fn layer_table() -> BTreeMap<String, BTreeSet<String>> {
    let doc =
        fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let begin = doc
        .find("<!-- layers: begin -->")
        .expect("the layer table's begin marker");
    let end = doc
        .find("<!-- layers: end -->")
        .expect("the layer table's end marker");
    let mut table = BTreeMap::new();
    let mut below = BTreeSet::new();
    for line in doc[begin..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 3 || !cells[1].starts_with('`') {
            continue;
        }
        let folder = cells[1].trim_matches('`').to_owned();
        let allowed: BTreeSet<String> = cells[2]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty() && c != "—")
            .collect();
        for layer in &allowed {
            assert!(
                below.contains(layer),
                "layer table: `{folder}` may import `{layer}`, which is not a row above it"
            );
        }
        below.insert(folder.clone());
        table.insert(folder, allowed);
    }
    assert!(
        table.len() >= 10,
        "the layer table has only {} rows",
        table.len()
    );
    table
}

/// Every layer a file names through `crate::…`, in `use` lines (also inside `{…}` groups) and
/// in paths written inline. Comments are skipped.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").trim();
                    if !first.is_empty() {
                        named.insert(first.to_owned());
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                named.insert(name);
            }
            rest = after;
        }
    }
    named
}

/// (file, layer it may not import) pairs that the restructure has not removed yet. The list
/// only shrinks: an entry that no longer breaks the table fails the test too.
const KNOWN_BREAKS: &[(&str, &str)] = &[];

#[test]
fn every_layer_imports_only_what_the_table_allows() {
    let table = layer_table();
    let src = workspace().join("engine/src");
    let mut breaks = BTreeSet::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let Some((folder, _)) = rel.split_once('/') else {
            assert!(
                rel == "lib.rs" || rel == "main.rs",
                "engine/src/{rel} sits in no layer folder"
            );
            continue;
        };
        let allowed = table
            .get(folder)
            .unwrap_or_else(|| panic!("engine/src/{folder} is not a row of the layer table"));
        let source = fs::read_to_string(&file).expect("source");
        for layer in crate_paths(&source) {
            if layer != folder && !allowed.contains(&layer) {
                breaks.insert((format!("engine/src/{rel}"), layer));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_BREAKS
        .iter()
        .map(|(f, l)| ((*f).to_owned(), (*l).to_owned()))
        .collect();
    let new: Vec<_> = breaks.difference(&known).collect();
    let gone: Vec<_> = known.difference(&breaks).collect();
    assert!(
        new.is_empty(),
        "imports that break the layer table in docs/ARCHITECTURE.md: {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "no longer break the table; remove from KNOWN_BREAKS: {gone:#?}"
    );
}

/// Files over 600 lines not yet split. Only shrinks.
const KNOWN_LONG_FILES: &[&str] = &[];

#[test]
fn no_source_file_is_over_600_lines() {
    let mut long = BTreeSet::new();
    for file in sources() {
        let lines = fs::read_to_string(&file).expect("source").lines().count();
        if lines > MAX_FILE_LINES {
            long.insert(relative(&file));
        }
    }
    let known: BTreeSet<String> = KNOWN_LONG_FILES.iter().map(|f| (*f).to_owned()).collect();
    let new: Vec<_> = long.difference(&known).collect();
    let gone: Vec<_> = known.difference(&long).collect();
    assert!(
        new.is_empty(),
        "files over {MAX_FILE_LINES} lines: {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "now short enough; remove from KNOWN_LONG_FILES: {gone:#?}"
    );
}

struct LongFunctions<'a> {
    lines: &'a [&'a str],
    file: String,
    found: Vec<String>,
}

impl LongFunctions<'_> {
    fn check(&mut self, name: &syn::Ident, start: usize, end: usize) {
        if end + 1 - start <= MAX_FN_LINES {
            return;
        }
        // A comment within the few lines above the signature (attributes and docs included)
        // may say why the function is long.
        let from = start.saturating_sub(8);
        let explained = self.lines[from..start.min(self.lines.len())]
            .iter()
            .any(|l| l.to_lowercase().contains(LONG_FN_REASON));
        if !explained {
            self.found.push(format!("{}::{name}", self.file));
        }
    }
}

impl<'ast> Visit<'ast> for LongFunctions<'_> {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let start = f.sig.fn_token.span.start().line;
        let end = f.block.brace_token.span.close().end().line;
        self.check(&f.sig.ident, start, end);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let start = f.sig.fn_token.span.start().line;
        let end = f.block.brace_token.span.close().end().line;
        self.check(&f.sig.ident, start, end);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            let start = f.sig.fn_token.span.start().line;
            let end = block.brace_token.span.close().end().line;
            self.check(&f.sig.ident, start, end);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Functions over 100 lines not yet split or explained. Only shrinks.
const KNOWN_LONG_FUNCTIONS: &[&str] = &[];

#[test]
fn no_function_is_over_100_lines_without_a_reason() {
    let mut long = BTreeSet::new();
    for file in sources() {
        let source = fs::read_to_string(&file).expect("source");
        let parsed = syn::parse_file(&source)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", relative(&file)));
        let lines: Vec<&str> = source.lines().collect();
        let mut visitor = LongFunctions {
            lines: &lines,
            file: relative(&file),
            found: Vec::new(),
        };
        visitor.visit_file(&parsed);
        long.extend(visitor.found);
    }
    let known: BTreeSet<String> = KNOWN_LONG_FUNCTIONS
        .iter()
        .map(|f| (*f).to_owned())
        .collect();
    let new: Vec<_> = long.difference(&known).collect();
    let gone: Vec<_> = known.difference(&long).collect();
    assert!(
        new.is_empty(),
        "functions over {MAX_FN_LINES} lines with no comment saying why: {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "now short or explained; remove from KNOWN_LONG_FUNCTIONS: {gone:#?}"
    );
}

#[test]
fn the_import_scan_sees_groups_and_inline_paths() {
    let named = crate_paths(
        "use crate::{app::Requests, store};\nlet x = crate::http::router();\n// crate::cli\n",
    );
    let expected: BTreeSet<String> = ["app", "store", "http"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(named, expected);
}
