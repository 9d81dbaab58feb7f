//! Builds the guest programs in `modules/` (their own cargo workspace) for `wasm32-wasip2`,
//! and `crash` also for `wasm32-wasip1`, so that tests, benches and the demo find them without
//! a manual step. The artifacts land in `<target>/wasm-modules/` and their directory is passed
//! to the crate as `WASMFLEET_MODULES_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

const P2_MODULES: &[&str] = &["hello", "echo", "sensor", "crash", "hostile", "burn", "kv"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let modules_dir = manifest_dir.join("modules");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one guest build between
    // profiles by building under <target>/wasm-modules.
    let target_root = out_dir.ancestors().nth(4).map(Path::to_path_buf).unwrap_or_else(|| out_dir.clone());
    let guest_target = target_root.join("wasm-modules");
    let dest = guest_target.join("dist");
    std::fs::create_dir_all(&dest).unwrap();

    println!("cargo:rerun-if-changed=modules/Cargo.toml");
    println!("cargo:rerun-if-changed=modules/Cargo.lock");
    for m in P2_MODULES {
        println!("cargo:rerun-if-changed=modules/{m}");
    }

    for target in ["wasm32-wasip2", "wasm32-wasip1"] {
        ensure_target(target);
    }
    build(&modules_dir, &guest_target, "wasm32-wasip2", None);
    build(&modules_dir, &guest_target, "wasm32-wasip1", Some("crash"));
    for m in P2_MODULES {
        copy(&guest_target.join("wasm32-wasip2/release").join(format!("{m}.wasm")), &dest.join(format!("{m}.wasm")));
    }
    copy(&guest_target.join("wasm32-wasip1/release/crash.wasm"), &dest.join("crash-p1.wasm"));
    println!("cargo:rustc-env=WASMFLEET_MODULES_DIR={}", dest.display());
}

fn build(modules_dir: &Path, target_dir: &Path, target: &str, package: Option<&str>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(modules_dir).args(["build", "--release", "--target", target]).arg("--target-dir").arg(target_dir);
    if let Some(p) = package {
        cmd.args(["-p", p]);
    }
    // Host-side flags and settings of the outer build must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PROFILE_RELEASE_STRIP",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("failed to run cargo for guest modules: {e}"));
    if !status.success() {
        panic!(
            "building guest modules for {target} failed ({status}); is the target installed? \
             `rustup target add {target}` (rust-toolchain.toml lists it)"
        );
    }
}

/// rustup installs the targets of `rust-toolchain.toml` only along with the toolchain: where
/// the pinned toolchain was already there without them, the guest build would fail with
/// "can't find crate for `core`". Add a missing target once, with rustup, before building.
fn ensure_target(target: &str) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let Ok(sysroot) = sysroot else { return };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(target).is_dir() {
        return;
    }
    println!("cargo:warning=the {target} target is missing: running `rustup target add {target}`");
    // The toolchain of this build, not whatever rustup would pick in this directory.
    let toolchain = sysroot.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", target]);
    if let Some(toolchain) = toolchain {
        cmd.args(["--toolchain", &toolchain]);
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => println!("cargo:warning=`rustup target add {target}` failed ({status})"),
        Err(e) => println!("cargo:warning=could not run rustup ({e}): install the {target} target by hand"),
    }
}

fn copy(from: &Path, to: &Path) {
    // Copy only when the content changed, so dependants are not rebuilt needlessly.
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap_or_else(|e| panic!("writing {}: {e}", to.display()));
    }
}
