//! The stats as a text table, for `truststream stats`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::SeriesStats;

const HEADERS: [&str; 11] = [
    "interface",
    "provider",
    "operation",
    "target",
    "calls",
    "errors",
    "p50",
    "p95",
    "p99",
    "max",
    "errors by kind",
];

/// Columns aligned to the right (the numbers).
const RIGHT: [bool; 11] = [
    false, false, false, false, true, true, true, true, true, true, false,
];

/// A latency in human units: `850µs`, `12.3ms`, `250ms`, `1.50s`.
pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 100_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else if us < 1_000_000 {
        format!("{:.0}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// The stats as a table with aligned columns, one row per series in the
/// given order, latencies in human units ([`format_duration`]); the last
/// column lists the errors by kind (`timeout 2, unavailable 1`). Only the
/// header line when `stats` is empty.
///
/// ```
/// let registry = truststream_layer_metrics::MetricsRegistry::new();
/// let table = truststream_layer_metrics::render_table(&registry.snapshot());
/// assert!(table.starts_with("interface"));
/// ```
pub fn render_table(stats: &[SeriesStats]) -> String {
    let rows: Vec<[String; 11]> = stats
        .iter()
        .map(|s| {
            let by_kind = s
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            [
                s.interface.to_string(),
                s.provider.clone(),
                s.operation.clone(),
                s.target.clone(),
                s.count.to_string(),
                s.error_count().to_string(),
                format_duration(s.p50),
                format_duration(s.p95),
                format_duration(s.p99),
                format_duration(s.max),
                by_kind,
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if RIGHT[i] {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&HEADERS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_human_units() {
        assert_eq!(format_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(format_duration(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.50s");
        assert_eq!(format_duration(Duration::ZERO), "0µs");
    }
}
