//! A tiny timing harness for `harness = false` benches: runs a closure in batches for a
//! fixed time and reports per-iteration nanoseconds (median and p99 over batches).
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Per-iteration statistics of one benchmark.
pub struct Stats {
    /// Median nanoseconds per iteration.
    pub median_ns: f64,
    /// 99th percentile nanoseconds per iteration.
    pub p99_ns: f64,
}

/// Runs `f` repeatedly for about `budget` and prints one line.
pub fn bench(name: &str, budget: Duration, mut f: impl FnMut()) -> Stats {
    // Warm up and size a batch to roughly 1 ms.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() > Duration::from_millis(1) || batch > 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    let s = summarize(&mut samples);
    println!(
        "{name:<48} median {:>10.1} ns   p99 {:>10.1} ns   ({} batches of {batch})",
        s.median_ns,
        s.p99_ns,
        samples.len()
    );
    s
}

/// Median and p99 of raw samples (nanoseconds).
pub fn summarize(samples: &mut [f64]) -> Stats {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        median_ns: at(0.5),
        p99_ns: at(0.99),
    }
}
