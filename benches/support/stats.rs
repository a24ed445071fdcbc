//! Latency percentiles.

use std::time::Duration;

/// Latencies of one measurement, sorted.
pub struct Latencies {
    sorted: Vec<Duration>,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no latency samples");
        samples.sort_unstable();
        Self { sorted: samples }
    }

    /// Returns the nearest-rank percentile `p` (0 to 100).
    pub fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    pub fn count(&self) -> usize {
        self.sorted.len()
    }

    /// Returns the samples, to join them with another run's.
    pub fn into_samples(self) -> Vec<Duration> {
        self.sorted
    }
}

/// Formats a duration in milliseconds with two decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
