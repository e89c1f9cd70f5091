//! The crate docs' derivation table names, for every statement, the tests that check
//! it. This test reads the table and finds each named test (a `fn` of that name in this
//! crate or in the workspace's top-level tests), and each named file, so a renamed or
//! removed test cannot leave the table pointing at nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_the_derivation_table_names_exists() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.parent().and_then(Path::parent).expect("crates/ddpm sits two levels below the workspace");
    let lib = fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let mut files = Vec::new();
    for dir in [crate_dir.join("src"), crate_dir.join("tests"), workspace.join("tests")] {
        rust_files(&dir, &mut files);
    }
    let sources: Vec<String> = files.iter().map(|f| fs::read_to_string(f).unwrap()).collect();

    let rows: Vec<&str> = lib.lines().filter(|l| l.starts_with("//! | ") && !l.starts_with("//! | # ")).collect();
    assert!(rows.len() >= 25, "found {} rows of the derivation table", rows.len());
    let mut named = 0;
    for row in rows {
        let tests = row.trim_end_matches('|').rsplit('|').next().unwrap();
        for name in tests.split('`').skip(1).step_by(2) {
            named += 1;
            if name.ends_with(".rs") {
                let path = workspace.join(name);
                let in_crate = crate_dir.join(name);
                assert!(path.is_file() || in_crate.is_file(), "the table names {name}, which is not a file:\n{row}");
            } else {
                let defined = format!("fn {name}(");
                assert!(sources.iter().any(|s| s.contains(&defined)), "the table names the test `{name}`, which no file defines:\n{row}");
            }
        }
    }
    assert!(named >= 40, "found {named} test names in the table");
}
