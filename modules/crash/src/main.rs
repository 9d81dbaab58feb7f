//! `crash`: a small WASI command for restart-policy and sandbox tests.
//!
//! With no arguments it prints a line to stdout and to stderr and exits with status 3
//! (or `CRASH_CODE`). Arguments select other behaviours:
//! `exit N` · `cat PATH` · `ls PATH` · `write PATH TEXT` · `env` · `sleep MS`.
//! File operations print what they did and exit 0, or print the error and exit 1.

use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match argv.as_slice() {
        [] => {
            let code = std::env::var("CRASH_CODE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3);
            println!("crash: starting, about to exit with {code}");
            eprintln!("crash: exiting with {code}");
            exit(code);
        }
        ["exit", code] => exit(code.parse().unwrap_or(1)),
        ["cat", path] => match std::fs::read_to_string(path) {
            Ok(text) => print!("{text}"),
            Err(e) => fail(&format!("cat {path}: {e}")),
        },
        ["ls", path] => match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for n in names {
                    println!("{n}");
                }
            }
            Err(e) => fail(&format!("ls {path}: {e}")),
        },
        ["write", path, text] => match std::fs::write(path, text) {
            Ok(()) => println!("wrote {path}"),
            Err(e) => fail(&format!("write {path}: {e}")),
        },
        ["env"] => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
        }
        ["sleep", ms] => {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(1000)));
            println!("slept {ms}");
        }
        other => fail(&format!("unknown arguments: {other:?}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("{msg}");
    exit(1);
}
