//! The scheduler bench moved to the scheduler crate, which builds without wasmtime:
//! `cargo bench -p wasmfleet-scheduler --bench scheduler` (see `scheduler/benches/scheduler.rs`).

fn main() {
    println!("the scheduler bench is in the scheduler crate: cargo bench -p wasmfleet-scheduler --bench scheduler");
}
