//! The completion chart: median and mean days to completion for the last months, as an
//! inline SVG bar chart.

use std::fmt::Write as _;

use chrono::{Datelike, Months, NaiveDate};

use crate::app::stats::{CompletionStats, StatsView};

/// Months in the chart, ending with the current one.
const CHART_MONTHS: u32 = 12;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 42.0;
const PLOT_H: f64 = H - TOP - BOTTOM;

/// A round axis maximum and step for values up to `max`.
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 4.0;
    let magnitude = 10_f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// The label of a tick on an axis whose ticks are `step` apart: as many decimals as the step
/// needs (0.005 days: three), so that small values do not all read "0.0".
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a step is positive, above 1e-12
fn axis_number(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-(step.log10() + 1e-9).floor()).clamp(0.0, 12.0) as usize
    };
    format!("{value:.decimals$}")
}

/// The ticks of a scale from 0 to `top`, `step` apart, computed from their index (adding the
/// step up would carry rounding errors into the last labels).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn ticks(top: f64, step: f64) -> impl Iterator<Item = f64> {
    let count = (top / step).round() as usize;
    (0..=count).map(move |i| i as f64 * step)
}

/// The chart of the [`CHART_MONTHS`] months up to `today`'s, with its legend.
#[allow(clippy::cast_precision_loss)] // at most 12 months
pub(super) fn chart(out: &mut String, stats: &StatsView, today: NaiveDate) {
    let first_of_month = today.with_day(1).unwrap_or(today);
    let months: Vec<NaiveDate> = (0..CHART_MONTHS)
        .rev()
        .map(|back| {
            first_of_month
                .checked_sub_months(Months::new(back))
                .unwrap_or(first_of_month)
        })
        .collect();
    let shown: Vec<_> = months
        .iter()
        .map(|m| {
            stats
                .completion
                .get(&format!("{:04}-{:02}", m.year(), m.month()))
        })
        .collect();
    let max = shown
        .iter()
        .flatten()
        .map(|c| c.median_days.max(c.mean_days))
        .fold(0.0, f64::max);
    let (top, step) = nice_scale(max);
    let y = |v: f64| TOP + PLOT_H * (1.0 - v / top);
    out.push_str(
        "<div class=\"keys\"><span><i class=\"dot k-median\"></i>median</span>\
         <span><i class=\"dot k-mean\"></i>mean</span></div>\n",
    );
    put!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"Median and mean \
         days to completion for the last {CHART_MONTHS} months\">\n"
    );
    for tick in ticks(top, step) {
        put!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6.0,
            y(tick) + 4.0,
            axis_number(tick, step),
            yy = y(tick),
        );
    }
    put!(
        out,
        "<text class=\"unit\" x=\"{:.1}\" y=\"12\" text-anchor=\"end\">days</text>\n",
        LEFT - 6.0
    );
    let slot = (W - LEFT - RIGHT) / months.len() as f64;
    for (i, (month, figures)) in months.iter().zip(&shown).enumerate() {
        month_bars(
            out,
            LEFT + slot * (i as f64 + 0.5),
            slot,
            *month,
            *figures,
            &y,
        );
        if i == 0 || month.month() == 1 {
            put!(
                out,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" \
                 text-anchor=\"middle\">{}</text>\n",
                LEFT + slot * (i as f64 + 0.5),
                TOP + PLOT_H + 31.0,
                month.year()
            );
        }
    }
    put!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c9ced6\"/>\n</svg>\n",
        W - RIGHT,
        TOP + PLOT_H,
        TOP + PLOT_H
    );
}

/// One month: its median and mean bars (if any request completed in it) and its name.
fn month_bars(
    out: &mut String,
    center: f64,
    slot: f64,
    month: NaiveDate,
    figures: Option<&CompletionStats>,
    y: &dyn Fn(f64) -> f64,
) {
    let name = MONTHS[month.month0() as usize];
    let bar = (slot * 0.3).min(22.0);
    if let Some(c) = figures {
        for (offset, class, value) in [
            (-bar - 1.0, "median", c.median_days),
            (1.0, "mean", c.mean_days),
        ] {
            let top_y = y(value.max(0.0));
            put!(
                out,
                "<rect class=\"{class}\" x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{bar:.1}\" \
                 height=\"{:.1}\" rx=\"2\"><title>{name} {}: {class} {value:.1} days \
                 ({} completed)</title></rect>\n",
                center + offset,
                (TOP + PLOT_H - top_y).max(0.0),
                month.year(),
                c.completed,
            );
        }
    }
    put!(
        out,
        "<text class=\"axis\" x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text>\n",
        TOP + PLOT_H + 16.0
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn scales_are_round() {
        assert_eq!(super::nice_scale(0.0), (1.0, 0.5));
        assert_eq!(super::nice_scale(31.2), (40.0, 10.0));
        assert_eq!(super::nice_scale(3.0), (3.0, 1.0));
    }

    /// Small values (completions within the hour) used to read "0.0" on every line.
    #[test]
    fn every_tick_of_a_small_scale_has_its_own_label() {
        for max in [0.0004, 0.02, 0.3, 3.0, 31.2, 410.0] {
            let (top, step) = super::nice_scale(max);
            let labels: Vec<String> = super::ticks(top, step)
                .map(|tick| super::axis_number(tick, step))
                .collect();
            let mut distinct = labels.clone();
            distinct.dedup();
            assert_eq!(distinct, labels, "{max}: {labels:?}");
            assert!(labels.len() >= 2, "{max}: {labels:?}");
        }
        let (top, step) = super::nice_scale(0.02);
        let labels: Vec<String> = super::ticks(top, step)
            .map(|tick| super::axis_number(tick, step))
            .collect();
        assert_eq!(labels, ["0.000", "0.005", "0.010", "0.015", "0.020"]);
        let (top, step) = super::nice_scale(31.2);
        let labels: Vec<String> = super::ticks(top, step)
            .map(|tick| super::axis_number(tick, step))
            .collect();
        assert_eq!(labels, ["0", "10", "20", "30", "40"]);
    }
}
