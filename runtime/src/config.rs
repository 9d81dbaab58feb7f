//! Runtime configuration and the sizing of the pooling allocator from a memory budget.
//!
//! wasmtime's pooling defaults reserve tens of GiB of address space up front, which fails on a
//! 1 GiB gateway ("failed to create stack pool mapping"). Here every pool dimension derives from
//! one budget: by default a quarter of physical memory, and at most half of the address-space
//! limit (`ulimit -v`) when one is set. Under such a limit the pool never reserves more than the
//! budget; without one, instance slots may reserve up to 4x the budget of address space (only
//! what guests touch becomes resident), so a big box gets more concurrent instances.

use std::path::PathBuf;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Settings of a [`crate::Runtime`]. `None` fields are derived from the machine.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Memory (and address space) the runtime may reserve for guest instances, in bytes.
    pub memory_budget_bytes: Option<u64>,
    /// Largest linear memory of one instance, in bytes (workloads may ask for less).
    pub max_instance_memory_bytes: Option<u64>,
    /// Instances alive at once across all workloads.
    pub max_instances: Option<u32>,
    /// Directory for compiled code (`.cwasm`), keyed by module digest and engine settings.
    /// `None`: compile in memory every time.
    pub cache_dir: Option<PathBuf>,
    /// Interval of the epoch clock that enforces deadlines and makes guests yield.
    pub epoch_tick: Duration,
    /// Use the pooling allocator (fast instantiation). `false`: allocate on demand.
    pub pooling: bool,
    /// Account each HTTP request's guest time (two monotonic clock reads per poll of the
    /// guest; see `ServiceStats::cpu_ns`). Off only to measure what it costs.
    pub guest_time: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_budget_bytes: None,
            max_instance_memory_bytes: None,
            max_instances: None,
            cache_dir: None,
            epoch_tick: Duration::from_millis(10),
            pooling: true,
            guest_time: true,
        }
    }
}

/// The resolved sizes of the instance pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolSizing {
    pub budget_bytes: u64,
    pub instance_memory_bytes: u64,
    pub instances: u32,
}

impl PoolSizing {
    /// Derives the pool from the config, the machine's memory and the address-space limit.
    pub fn derive(config: &RuntimeConfig) -> PoolSizing {
        Self::derive_with(config, physical_memory_bytes(), address_space_limit_bytes())
    }

    /// Pure form of [`PoolSizing::derive`], for tests.
    pub fn derive_with(config: &RuntimeConfig, physical_bytes: u64, address_space_limit: Option<u64>) -> PoolSizing {
        let mut budget = config.memory_budget_bytes.unwrap_or(physical_bytes / 4);
        if let Some(limit) = address_space_limit {
            budget = budget.min(limit / 2);
        }
        let budget = budget.max(64 * MIB);
        let instance_memory =
            config.max_instance_memory_bytes.unwrap_or_else(|| (budget / 16).clamp(32 * MIB, 256 * MIB));
        // Whole wasm pages.
        let instance_memory = (instance_memory / 65536).max(1) * 65536;
        let instances = config.max_instances.unwrap_or_else(|| {
            let overcommit = if address_space_limit.is_some() { 1 } else { 4 };
            let n = overcommit * budget / instance_memory.max(1);
            n.clamp(8, 1000) as u32
        });
        PoolSizing { budget_bytes: budget, instance_memory_bytes: instance_memory, instances }
    }
}

fn physical_memory_bytes() -> u64 {
    let pages = unsafe_free_sysconf(libc::_SC_PHYS_PAGES);
    let page = unsafe_free_sysconf(libc::_SC_PAGESIZE);
    match (pages, page) {
        (Some(p), Some(s)) => p.saturating_mul(s),
        _ => 1 << 30,
    }
}

#[expect(unsafe_code, reason = "sysconf is a libc call without memory-safety preconditions")]
fn unsafe_free_sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system value and has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v as u64)
}

/// Under an address-space limit (`ulimit -v`), caps glibc's malloc arenas at 2. Each thread
/// that allocates under contention may otherwise get an arena of its own, reserving 64 MiB of
/// address space apiece: a few busy threads take hundreds of MiB of a 1 GiB limit and the
/// next large allocation (a module's compile) fails. Call it first thing in `main`, before
/// threads start. Does nothing without a limit, or off glibc.
pub fn fit_allocator_to_address_space() {
    if address_space_limit_bytes().is_some() {
        limit_malloc_arenas(2);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "mallopt changes a glibc allocator setting; no memory is touched")]
fn limit_malloc_arenas(arenas: libc::c_int) {
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads run.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas(_arenas: i32) {}

#[expect(unsafe_code, reason = "getrlimit writes into a struct we own")]
fn address_space_limit_bytes() -> Option<u64> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) };
    (rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gib_address_space_fits() {
        let s = PoolSizing::derive_with(&RuntimeConfig::default(), 1 << 30, Some(1 << 30));
        // Reserved guest memory stays well inside the address-space limit.
        assert!(s.instances as u64 * s.instance_memory_bytes <= (1u64 << 30) / 2, "{s:?}");
        assert!(s.instances >= 8, "{s:?}");
        assert!(s.instance_memory_bytes >= 32 * MIB, "{s:?}");
        // A big box limited to 1 GiB of address space by ulimit -v.
        let s = PoolSizing::derive_with(&RuntimeConfig::default(), 24 << 30, Some(1 << 30));
        assert_eq!((s.instance_memory_bytes, s.instances), (32 * MIB, 16), "{s:?}");
    }

    #[test]
    fn big_machine_is_capped() {
        let s = PoolSizing::derive_with(&RuntimeConfig::default(), 64 << 30, None);
        assert_eq!(s.instance_memory_bytes, 256 * MIB);
        assert!(s.instances <= 1000);
    }

    #[test]
    fn overrides_win() {
        let cfg = RuntimeConfig {
            memory_budget_bytes: Some(512 * MIB),
            max_instance_memory_bytes: Some(32 * MIB),
            max_instances: Some(10),
            ..RuntimeConfig::default()
        };
        let s = PoolSizing::derive_with(&cfg, 8 << 30, None);
        assert_eq!(s, PoolSizing { budget_bytes: 512 * MIB, instance_memory_bytes: 32 * MIB, instances: 10 });
    }
}
