//! wasmfleet
