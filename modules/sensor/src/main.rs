//! `sensor`: a long-running WASI command, the shape of an IoT daemon. Prints a reading every
//! `SENSOR_INTERVAL_MS` (default 1000) milliseconds and, when a `/data` directory is granted,
//! appends each reading to `/data/readings.log` (with `SENSOR_FSYNC=1`, syncing each one), and
//! continues the sequence the log ends with after a restart.

use std::io::Write as _;
use std::time::Duration;

fn main() {
    let interval = std::env::var("SENSOR_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    let name = std::env::var("SENSOR_NAME").unwrap_or_else(|_| "temp0".into());
    // Which node wrote a reading (the agent sets it): a copy of the log shows where it was.
    let node = std::env::var("WASMFLEET_NODE").unwrap_or_else(|_| "-".into());
    let fsync = std::env::var("SENSOR_FSYNC").is_ok_and(|v| v == "1");
    // Continue after the last reading kept (a restart, or another node's copy of the volume).
    let mut seq: u64 = std::fs::read_to_string("/data/readings.log")
        .ok()
        .and_then(|log| {
            let last = log.lines().rev().find(|l| l.contains(" celsius="))?;
            let n = last.split_whitespace().find_map(|w| w.strip_prefix("seq="))?;
            n.parse::<u64>().ok().map(|n| n + 1)
        })
        .unwrap_or(0);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/data/readings.log")
        .ok();
    loop {
        // A deterministic wave: readings look alive without needing a real sensor.
        let celsius = 21.0 + ((seq % 20) as f64 - 10.0) * 0.15;
        let line = format!("sensor={name} node={node} seq={seq} celsius={celsius:.2}");
        println!("{line}");
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
            if fsync {
                let _ = f.sync_data();
            }
        }
        seq += 1;
        std::thread::sleep(Duration::from_millis(interval));
    }
}
