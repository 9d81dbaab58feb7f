//! [`Runtime`]: one wasmtime [`Engine`] per process, its linkers, the epoch clock and the
//! compiled-code cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::CodeCache;
use crate::config::{PoolSizing, RuntimeConfig};
use crate::error::RuntimeError;
use crate::host::{HostState, P1State};
use crate::module::{self, Module};

/// The Wasm host. Create one per process and share it (`Arc<Runtime>`).
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) p1_linker: wasmtime::Linker<P1State>,
    pub(crate) sizing: PoolSizing,
    cache: CodeCache,
    epoch_stop: Arc<AtomicBool>,
    /// Node-wide admission: one permit per pool slot, so a burst waits instead of failing to
    /// allocate an instance.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Whether HTTP requests account their guest time.
    pub(crate) guest_time: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("sizing", &self.sizing).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine (pool sized from the config), the linkers and the epoch clock.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let sizing = PoolSizing::derive(&config);
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine { reason: format!("{e:#}") };

        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            // Needed only for WASIp3; on, it roughly doubles per-request cost for p2 guests.
            .concurrency_support(false)
            .parallel_compilation(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(1 << 20)
            // Small reservations keep the host inside a small address space (`ulimit -v`).
            .memory_reservation(sizing.instance_memory_bytes)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
        let engine = if config.pooling {
            // Resetting a slot with madvise costs a TLB shootdown (an IPI to every core running
            // the process) per request. With PAGEMAP_SCAN (Linux >= 6.7) only the pages a guest
            // touched are reset with memset and the slot stays resident; without it, memset
            // the first 64 KiB and madvise the rest.
            let fast = Engine::new(cfg.clone().allocation_strategy(pooling(&sizing, true)));
            match fast {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, "PAGEMAP_SCAN unavailable; resetting slots with madvise");
                    Engine::new(cfg.allocation_strategy(pooling(&sizing, false))).map_err(engine_err)?
                }
            }
        } else {
            Engine::new(&cfg).map_err(engine_err)?
        };

        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        crate::keyvalue::add_to_linker(&mut linker, HostState::kv).map_err(engine_err)?;
        let mut p1_linker = wasmtime::Linker::<P1State>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut p1_linker, |s: &mut P1State| &mut s.wasi).map_err(engine_err)?;

        let cache = CodeCache::new(config.cache_dir.clone(), &engine)?;
        let epoch_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_clock(engine.clone(), config.epoch_tick, epoch_stop.clone());

        let slots = Arc::new(tokio::sync::Semaphore::new(sizing.instances as usize));
        Ok(Runtime { engine, linker, p1_linker, sizing, cache, epoch_stop, slots, guest_time: config.guest_time })
    }

    /// The resolved pool sizes.
    pub fn sizing(&self) -> PoolSizing {
        self.sizing
    }

    /// Instance slots free right now.
    pub fn available_instances(&self) -> usize {
        self.slots.available_permits()
    }

    /// The wasmtime engine (for embedders that need it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Verifies, classifies and compiles `bytes` (or loads the compiled code from the cache),
    /// and pre-links it for fast instantiation.
    pub fn load(&self, bytes: &[u8]) -> Result<Module, RuntimeError> {
        module::load(self, &self.cache, bytes)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.epoch_stop.store(true, Ordering::Relaxed);
    }
}

/// The pooling allocator, sized from the budget.
fn pooling(sizing: &PoolSizing, pagemap_scan: bool) -> InstanceAllocationStrategy {
    let mut pool = PoolingAllocationConfig::default();
    let n = sizing.instances;
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(8))
        .total_memories(n)
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memories_per_component(1)
        .max_memories_per_module(1)
        .max_tables_per_component(8)
        .table_elements(10_000)
        .max_memory_size(sizing.instance_memory_bytes as usize)
        .max_unused_warm_slots(n.min(100));
    if pagemap_scan {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident((2 << 20).min(sizing.instance_memory_bytes as usize))
            .table_keep_resident(128 << 10);
    } else {
        pool.linear_memory_keep_resident(64 << 10);
    }
    InstanceAllocationStrategy::Pooling(pool)
}

fn spawn_epoch_clock(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new().name("wasm-epoch".into()).stack_size(64 << 10).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            engine.increment_epoch();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the epoch clock thread; deadlines will not fire");
    }
}
