//! `envoy-wam check FILE...`: checks the envoy-wam configurations in Envoy or Istio files
//! with the filter's own validation. Prints `path:line: error|warning: field: message` lines;
//! exits 1 when any file has an error, 2 on a usage error.

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
    for path in files {
        let findings = match std::fs::read_to_string(path) {
            Ok(text) => checker::check(&text),
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

#[cfg(target_arch = "wasm32")]
fn main() {}
