//! Prometheus metrics, kept in atomics and rendered as text at
//! `GET /metrics`. No labels carry record content or personal data.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    syncs: AtomicU64,
    sync_failures: AtomicU64,
    changes_merged: AtomicU64,
    records_sent: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refusals: Mutex<BTreeMap<String, u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// Records a completed sync round.
    pub fn sync_done(
        &self,
        bytes_in: usize,
        bytes_out: usize,
        merged: usize,
        sent: usize,
        took: Duration,
    ) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
        self.changes_merged
            .fetch_add(merged as u64, Ordering::Relaxed);
        self.records_sent.fetch_add(sent as u64, Ordering::Relaxed);
        self.observe(took);
    }

    /// Records a sync request refused as a whole.
    pub fn sync_failed(&self, bytes_in: usize, reason: &str, took: Duration) {
        self.sync_failures.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.refused(reason);
        self.observe(took);
    }

    /// Counts a refusal (of a request or of one record) by its code.
    pub fn refused(&self, reason: &str) {
        let mut r = self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *r.entry(reason.to_owned()).or_insert(0) += 1;
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        };
        counter(
            &mut out,
            "gridsync_syncs_total",
            "Sync rounds served.",
            &self.syncs,
        );
        counter(
            &mut out,
            "gridsync_sync_failures_total",
            "Sync requests refused as a whole.",
            &self.sync_failures,
        );
        counter(
            &mut out,
            "gridsync_changes_merged_total",
            "New changes merged from devices.",
            &self.changes_merged,
        );
        counter(
            &mut out,
            "gridsync_records_sent_total",
            "Records sent to devices.",
            &self.records_sent,
        );
        counter(
            &mut out,
            "gridsync_bytes_in_total",
            "Sync request bytes received.",
            &self.bytes_in,
        );
        counter(
            &mut out,
            "gridsync_bytes_out_total",
            "Sync response bytes sent.",
            &self.bytes_out,
        );
        let _ = writeln!(out, "# HELP gridsync_refusals_total Refusals by reason.\n# TYPE gridsync_refusals_total counter");
        for (reason, n) in self
            .refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(out, "gridsync_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP gridsync_sync_seconds Sync round latency.\n# TYPE gridsync_sync_seconds histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "gridsync_sync_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "gridsync_sync_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "gridsync_sync_seconds_sum {}\ngridsync_sync_seconds_count {count}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_refusals_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.sync_done(100, 200, 3, 4, Duration::from_millis(3));
        m.sync_failed(10, "malformed_message", Duration::from_millis(700));
        m.refused("out_of_scope");
        let text = m.render();
        assert!(text.contains("gridsync_syncs_total 1\n"));
        assert!(text.contains("gridsync_bytes_in_total 110\n"));
        assert!(text.contains("gridsync_changes_merged_total 3\n"));
        assert!(text.contains("gridsync_refusals_total{reason=\"out_of_scope\"} 1\n"));
        assert!(text.contains("gridsync_sync_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("gridsync_sync_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("gridsync_sync_seconds_count 2\n"));
    }
}
