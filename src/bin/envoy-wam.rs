//! `envoy-wam check FILE...`: checks the envoy-wam configurations in Envoy or Istio files
//! with the filter's own validation. Prints `path:line: error|warning: field: message` lines;
//! exits 1 when any file has an error, 2 on a usage error. A bootstrap that takes its listeners
//! from files (file-based LDS) has those files checked too.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    use envoy_wam::checker::{self, Severity};
    use std::process::ExitCode;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let files = match args.split_first() {
        Some((cmd, files)) if cmd == "check" && !files.is_empty() => files,
        _ => {
            eprintln!("usage: envoy-wam check FILE.yaml|FILE.json [...]");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let mut queue: std::collections::VecDeque<String> = files.iter().cloned().collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let path = &path;
        let findings = match std::fs::read_to_string(path) {
            Ok(text) => {
                queue.extend(checker::lds_files(&text).iter().map(|f| lds_path(path, f)));
                checker::check(&text)
            }
            Err(e) => {
                println!("{path}:1: error: (file): cannot read: {e}");
                failed = true;
                continue;
            }
        };
        for f in &findings {
            failed |= f.severity == Severity::Error;
            println!("{}", f.display(path));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An LDS file named in `bootstrap`: as written when it exists (Envoy resolves a relative path
/// from its working directory), otherwise relative to the bootstrap's own directory.
#[cfg(not(target_arch = "wasm32"))]
fn lds_path(bootstrap: &str, file: &str) -> String {
    let p = std::path::Path::new(file);
    if p.is_absolute() || p.exists() {
        return file.to_string();
    }
    match std::path::Path::new(bootstrap).parent() {
        Some(dir) if dir.join(p).exists() => dir.join(p).to_string_lossy().into_owned(),
        _ => file.to_string(),
    }
}

#[cfg(target_arch = "wasm32")]
fn main() {}
