//! Reports: a human summary, JSON for comparing runs, and an SVG chart of
//! rate, latency percentiles and consumer lag over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Percentiles of a histogram in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p95_ms": ms(h.value_at_quantile(0.95)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// One second of the run.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub target: f64,
    pub sent: u64,
    pub accepted: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Slowest end-to-end latency (send → note) of the jobs sent in this second.
    pub e2e_max_ms: Option<f64>,
    pub lag: Option<i64>,
}

pub fn timeline_json(t: &[Second]) -> Value {
    Value::Array(
        t.iter()
            .enumerate()
            .map(|(i, s)| {
                json!({"t": i, "target_rate": s.target, "sent": s.sent, "accepted": s.accepted, "errors": s.errors,
                "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "e2e_max_ms": s.e2e_max_ms, "lag": s.lag})
            })
            .collect(),
    )
}

fn path(points: &[(f64, f64)], x0: f64, y0: f64, w: f64, h: f64, xmax: f64, ymax: f64) -> String {
    let mut d = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        let px = x0 + x / xmax.max(1e-9) * w;
        let py = y0 + h - (y / ymax.max(1e-9)).min(1.0) * h;
        let _ = write!(d, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
    }
    d
}

/// A three-panel SVG: requests per second (target and accepted), ingest
/// latency p50/p99 (and end-to-end p50 where measured), consumer lag.
pub fn chart_svg(title: &str, t: &[Second]) -> String {
    let (w, ph, left, top) = (900.0, 200.0, 70.0, 40.0);
    let n = t.len().max(2) as f64 - 1.0;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/><text x='{left}' y='22' font-size='15' font-weight='bold'>{}</text>",
        w + left + 160.0,
        top + 3.0 * (ph + 50.0),
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);
    let panels: Vec<(&str, Vec<Series>)> = vec![
        (
            "requests / s",
            vec![
                (
                    "target",
                    "#999",
                    t.iter().enumerate().map(|(i, s)| (i as f64, s.target)).collect(),
                ),
                (
                    "accepted",
                    "#1f77b4",
                    t.iter()
                        .enumerate()
                        .map(|(i, s)| (i as f64, s.accepted as f64))
                        .collect(),
                ),
                (
                    "errors",
                    "#d62728",
                    t.iter().enumerate().map(|(i, s)| (i as f64, s.errors as f64)).collect(),
                ),
            ],
        ),
        (
            "latency (ms)",
            vec![
                (
                    "ingest p50",
                    "#2ca02c",
                    t.iter().enumerate().map(|(i, s)| (i as f64, s.p50_ms)).collect(),
                ),
                (
                    "ingest p99",
                    "#ff7f0e",
                    t.iter().enumerate().map(|(i, s)| (i as f64, s.p99_ms)).collect(),
                ),
                (
                    "e2e max",
                    "#9467bd",
                    t.iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.e2e_max_ms.map(|v| (i as f64, v)))
                        .collect(),
                ),
            ],
        ),
        (
            "consumer lag (records)",
            vec![(
                "total lag",
                "#8c564b",
                t.iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.lag.map(|l| (i as f64, l as f64)))
                    .collect(),
            )],
        ),
    ];
    for (p, (label, series)) in panels.iter().enumerate() {
        let y0 = top + p as f64 * (ph + 50.0);
        let ymax = series
            .iter()
            .flat_map(|(_, _, pts)| pts.iter().map(|(_, y)| *y))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let _ = write!(
            svg,
            "<rect x='{left}' y='{y0}' width='{w}' height='{ph}' fill='none' stroke='#ccc'/>\
             <text x='{left}' y='{}' fill='#333'>{label}</text><text x='{}' y='{}' text-anchor='end'>{ymax:.0}</text>\
             <text x='{}' y='{}' text-anchor='end'>0</text><text x='{}' y='{}' text-anchor='end'>{n:.0} s</text>",
            y0 - 6.0,
            left - 6.0,
            y0 + 10.0,
            left - 6.0,
            y0 + ph,
            left + w,
            y0 + ph + 14.0
        );
        for (k, (name, color, pts)) in series.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let _ = write!(
                svg,
                "<path d='{}' fill='none' stroke='{color}' stroke-width='1.5'/><rect x='{}' y='{}' width='10' height='10' fill='{color}'/><text x='{}' y='{}'>{name}</text>",
                path(pts, left, y0, w, ph, n, ymax),
                left + w + 12.0,
                y0 + 8.0 + k as f64 * 18.0,
                left + w + 26.0,
                y0 + 17.0 + k as f64 * 18.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Errors by class, for the summary.
pub fn classes(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_path_per_series_with_data() {
        let t: Vec<Second> = (0..5)
            .map(|i| Second {
                target: 10.0,
                accepted: i,
                p50_ms: 1.0,
                p99_ms: 2.0,
                lag: Some(i as i64),
                ..Default::default()
            })
            .collect();
        let svg = chart_svg("run", &t);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(
            svg.matches("<path").count(),
            6,
            "target, accepted, errors, p50, p99, lag (no e2e data)"
        );
    }
}
