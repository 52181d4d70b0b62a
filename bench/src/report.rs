//! Turning what the producers measured into a summary: merging their latency histograms,
//! computing rates over the measurement window, and printing both the human-readable lines
//! and the machine-readable `RESULT` line that scripts parse.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::fio::FioBaseline;

/// Highest latency the histograms track: an hour. Anything slower is clamped (and the run is
/// broken anyway); the bound keeps the histogram's memory fixed.
const LATENCY_US_MAX: u64 = 3_600 * 1_000_000;

/// Three significant digits: 0.1% error on any latency, which is finer than run-to-run noise.
const SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS).expect("bounds are valid")
}

/// What one producer saw during the measurement window.
pub struct ProducerTally {
    pub payload_bytes: u64,
    pub records: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for ProducerTally {
    fn default() -> ProducerTally {
        ProducerTally { payload_bytes: 0, records: 0, latency_us: new_latency_histogram() }
    }
}

/// The run's numbers, all producers together.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub mb_per_s: f64,
    pub records_per_s: f64,
    /// Appends sent within the window, whose latency the percentiles describe.
    pub appends: u64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
}

impl Summary {
    /// Merges the producers' tallies; rates are over `window`, the measured time after warm-up.
    pub fn from_tallies(tallies: &[ProducerTally], window: Duration) -> Result<Summary> {
        let mut latency_us = new_latency_histogram();
        for tally in tallies {
            latency_us.add(&tally.latency_us).context("merging latency histograms")?;
        }
        let payload_bytes: u64 = tallies.iter().map(|tally| tally.payload_bytes).sum();
        let records: u64 = tallies.iter().map(|tally| tally.records).sum();
        let window_s = window.as_secs_f64().max(f64::MIN_POSITIVE);
        Ok(Summary {
            mb_per_s: payload_bytes as f64 / 1e6 / window_s,
            records_per_s: records as f64 / window_s,
            appends: latency_us.len(),
            latency_us_p50: latency_us.value_at_quantile(0.50),
            latency_us_p99: latency_us.value_at_quantile(0.99),
            latency_us_p999: latency_us.value_at_quantile(0.999),
            latency_us_max: latency_us.max(),
        })
    }
}

/// `numerator / denominator`, or 0 when there is no baseline to divide by.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// How the load is offered, for a run's first line.
pub fn load_mode(rate_records_per_s: Option<u64>) -> String {
    match rate_records_per_s {
        Some(rate) => format!("open loop at {rate} records/s"),
        None => "closed loop".to_owned(),
    }
}

/// Lines for a person reading the terminal.
pub fn human_lines(summary: &Summary, fio: Option<&FioBaseline>) -> Vec<String> {
    let mut lines = vec![
        format!(
            "throughput: {:.2} MB/s of record payload, {:.2} records/s; {} appends timed",
            summary.mb_per_s, summary.records_per_s, summary.appends
        ),
        format!(
            "append latency (call to durable ack): p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            summary.latency_us_p50, summary.latency_us_p99, summary.latency_us_p999, summary.latency_us_max
        ),
    ];
    if let Some(fio) = fio {
        lines.extend(fio_lines(summary.mb_per_s, fio));
        lines.push(format!(
            "p99 latency vs fio's 4 KiB write+fdatasync p99: {:.2}x",
            ratio(summary.latency_us_p99 as f64, fio.fsync_latency_us_p99 as f64)
        ));
    }
    lines
}

/// What fio measured, and `mb_per_s` as a fraction of its two bandwidth figures.
pub fn fio_lines(mb_per_s: f64, fio: &FioBaseline) -> [String; 2] {
    [
        format!(
            "fio on the same directory: sequential write {:.2} MB/s, durable appends (1 MiB write + \
             fdatasync, fresh file) {:.2} MB/s, 4 KiB write+fdatasync p99 {} µs",
            fio.write_mb_per_s, fio.durable_mb_per_s, fio.fsync_latency_us_p99
        ),
        format!(
            "bandwidth vs fio: {:.2}x of sequential writes (bw_ratio), {:.2}x of durable appends",
            ratio(mb_per_s, fio.write_mb_per_s),
            ratio(mb_per_s, fio.durable_mb_per_s)
        ),
    ]
}

/// The single machine-readable line, printed last. Fio fields are zero without a baseline.
pub fn result_line(summary: &Summary, fio: Option<&FioBaseline>) -> String {
    let (fio_mb_per_s, fio_fsync_p99_us) =
        fio.map_or((0.0, 0), |fio| (fio.write_mb_per_s, fio.fsync_latency_us_p99));
    format!(
        "RESULT mb_per_s={:.2} records_per_s={:.2} p50_us={} p99_us={} p999_us={} fio_mb_per_s={:.2} \
         bw_ratio={:.2} fio_fsync_p99_us={} p99_ratio={:.2}",
        summary.mb_per_s,
        summary.records_per_s,
        summary.latency_us_p50,
        summary.latency_us_p99,
        summary.latency_us_p999,
        fio_mb_per_s,
        ratio(summary.mb_per_s, fio_mb_per_s),
        fio_fsync_p99_us,
        ratio(summary.latency_us_p99 as f64, fio_fsync_p99_us as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            mb_per_s: 123.456,
            records_per_s: 120_562.5,
            appends: 10,
            latency_us_p50: 800,
            latency_us_p99: 2_000,
            latency_us_p999: 3_100,
            latency_us_max: 9_000,
        }
    }

    #[test]
    fn result_line_without_fio_has_zero_fio_fields() {
        assert_eq!(
            result_line(&summary(), None),
            "RESULT mb_per_s=123.46 records_per_s=120562.50 p50_us=800 p99_us=2000 p999_us=3100 \
             fio_mb_per_s=0.00 bw_ratio=0.00 fio_fsync_p99_us=0 p99_ratio=0.00"
        );
    }

    #[test]
    fn result_line_with_fio_has_ratios() {
        let fio = FioBaseline { write_mb_per_s: 1_000.0, fsync_latency_us_p99: 500, durable_mb_per_s: 400.0 };
        assert_eq!(
            result_line(&summary(), Some(&fio)),
            "RESULT mb_per_s=123.46 records_per_s=120562.50 p50_us=800 p99_us=2000 p999_us=3100 \
             fio_mb_per_s=1000.00 bw_ratio=0.12 fio_fsync_p99_us=500 p99_ratio=4.00"
        );
    }

    #[test]
    fn tallies_merge_into_rates_and_percentiles() {
        let mut first = ProducerTally::default();
        let mut second = ProducerTally::default();
        for latency_us in 1..=100 {
            first.latency_us.record(latency_us).unwrap();
        }
        second.latency_us.record(10_000).unwrap();
        first.payload_bytes = 3_000_000;
        second.payload_bytes = 1_000_000;
        first.records = 300;
        second.records = 100;
        let merged = Summary::from_tallies(&[first, second], Duration::from_secs(2)).unwrap();
        assert_eq!(merged.mb_per_s, 2.0);
        assert_eq!(merged.records_per_s, 200.0);
        assert_eq!(merged.appends, 101);
        assert_eq!(merged.latency_us_p50, 51);
        assert!(merged.latency_us_max >= 10_000 && merged.latency_us_max < 10_010);
    }
}
