//! `sensor`: a long-running WASI command, the shape of an IoT daemon. Prints a reading every
//! `SENSOR_INTERVAL_MS` (default 1000) milliseconds and, when a `/data` directory is granted,
//! appends each reading to `/data/readings.log`.

use std::io::Write as _;
use std::time::Duration;

fn main() {
    let interval = std::env::var("SENSOR_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    let name = std::env::var("SENSOR_NAME").unwrap_or_else(|_| "temp0".into());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/data/readings.log")
        .ok();
    let mut seq: u64 = 0;
    loop {
        // A deterministic wave: readings look alive without needing a real sensor.
        let celsius = 21.0 + ((seq % 20) as f64 - 10.0) * 0.15;
        let line = format!("sensor={name} seq={seq} celsius={celsius:.2}");
        println!("{line}");
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        seq += 1;
        std::thread::sleep(Duration::from_millis(interval));
    }
}
