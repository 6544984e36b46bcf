//! The legal deadline tables: `DeadlineRule::GDPR` (one calendar month, extendable by two),
//! `DeadlineRule::CCPA` (45 days, extendable by 45) and the calendar arithmetic of `Span::after`,
//! checked against dates worked out by hand from the legal rules.

use chrono::NaiveDate;
use lethe_domain::{DeadlineRule, Span};

/// One row: what the row checks, the day of receipt, the expected deadline (ISO dates).
type Row = (&'static str, &'static str, &'static str);

#[track_caller]
fn day(iso: &str) -> NaiveDate {
    iso.parse().unwrap()
}

/// Checks every row with `rule` and a total `extension`, reporting all failing rows at once.
#[track_caller]
fn check_table(rule: DeadlineRule, extension: Span, rows: &[Row]) {
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|(label, received, expected)| {
            let actual = rule.deadline(day(received), extension);
            (actual != day(expected)).then(|| {
                format!(
                    "{label}: received {received} + {extension}: expected {expected}, got {actual}"
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "wrong deadlines:\n{}",
        failures.join("\n")
    );
}

const NO_EXTENSION: Span = Span::months(0);

#[test]
fn gdpr_gives_one_calendar_month_from_the_day_of_receipt() {
    check_table(
        DeadlineRule::GDPR,
        NO_EXTENSION,
        &[
            ("3 Sep to 3 Oct", "2025-09-03", "2025-10-03"),
            ("mid-month", "2025-11-15", "2025-12-15"),
            ("31 Jan, common year", "2025-01-31", "2025-02-28"),
            ("30 Jan, common year", "2025-01-30", "2025-02-28"),
            ("29 Jan, common year", "2025-01-29", "2025-02-28"),
            ("31 Jan, leap year", "2024-01-31", "2024-02-29"),
            ("29 Feb, leap year", "2024-02-29", "2024-03-29"),
            ("28 Feb, common year", "2025-02-28", "2025-03-28"),
            ("30 Apr", "2025-04-30", "2025-05-30"),
            ("31 Mar to 30 Apr", "2025-03-31", "2025-04-30"),
            ("31 May to 30 Jun", "2025-05-31", "2025-06-30"),
            ("31 Aug to 30 Sep", "2025-08-31", "2025-09-30"),
            ("over the year end", "2025-12-31", "2026-01-31"),
        ],
    );
}

#[test]
fn gdpr_follows_the_leap_year_century_rules() {
    check_table(
        DeadlineRule::GDPR,
        NO_EXTENSION,
        &[
            ("2000 is a leap year", "2000-01-31", "2000-02-29"),
            ("29 Feb 2000 exists", "2000-02-29", "2000-03-29"),
            ("1900 is not a leap year", "1900-01-31", "1900-02-28"),
            ("2100 is not a leap year", "2100-01-31", "2100-02-28"),
        ],
    );
}

#[test]
fn gdpr_with_the_full_extension_counts_three_months_from_receipt() {
    check_table(
        DeadlineRule::GDPR,
        Span::months(2),
        &[
            // Not 28 Feb + 2 months = 28 Apr.
            ("from 31 Jan", "2025-01-31", "2025-04-30"),
            ("into a common Feb", "2025-11-30", "2026-02-28"),
            ("into a leap Feb", "2023-11-30", "2024-02-29"),
            ("over the year end", "2025-10-31", "2026-01-31"),
            ("from 29 Feb", "2024-02-29", "2024-05-29"),
            ("from 3 Sep", "2025-09-03", "2025-12-03"),
        ],
    );
}

#[test]
fn gdpr_partial_extensions_also_count_from_receipt() {
    // Not 28 Feb + 1 month = 28 Mar.
    check_table(
        DeadlineRule::GDPR,
        Span::months(1),
        &[("one month more", "2025-01-31", "2025-03-31")],
    );
    // 28 Feb, then ten plain days.
    check_table(
        DeadlineRule::GDPR,
        Span::days(10),
        &[("ten days more", "2025-01-31", "2025-03-10")],
    );
}

#[test]
fn ccpa_gives_45_days() {
    check_table(
        DeadlineRule::CCPA,
        NO_EXTENSION,
        &[
            ("1 Jan", "2025-01-01", "2025-02-15"),
            ("over the year end", "2025-12-31", "2026-02-14"),
            ("across a leap Feb", "2024-01-15", "2024-02-29"),
            ("across a common Feb", "2025-01-15", "2025-03-01"),
        ],
    );
}

#[test]
fn ccpa_with_the_extension_gives_90_days() {
    check_table(
        DeadlineRule::CCPA,
        Span::days(45),
        &[
            ("1 Jan", "2025-01-01", "2025-04-01"),
            ("leap year", "2024-01-01", "2024-03-31"),
            ("over the year end", "2025-12-31", "2026-03-31"),
        ],
    );
}

#[test]
fn the_latest_deadline_is_the_deadline_with_the_full_extension() {
    let rows = [
        (DeadlineRule::GDPR, "2025-01-31", "2025-04-30"),
        (DeadlineRule::GDPR, "2025-11-30", "2026-02-28"),
        (DeadlineRule::CCPA, "2025-01-01", "2025-04-01"),
    ];
    for (rule, received, expected) in rows {
        let latest = rule.latest_deadline(day(received));
        assert_eq!(latest, day(expected), "{rule:?} from {received}");
    }
}

#[test]
fn span_after_adds_months_then_days() {
    let span = |months, days| Span { months, days };
    let rows = [
        ("nothing", span(0, 0), "2025-01-31", "2025-01-31"),
        ("one day", span(0, 1), "2025-12-31", "2026-01-01"),
        ("12 months", span(12, 0), "2024-02-29", "2025-02-28"),
        ("48 months", span(48, 0), "2024-02-29", "2028-02-29"),
        ("1 month 1 day", span(1, 1), "2025-01-31", "2025-03-01"),
        ("1 month 15 days", span(1, 15), "2024-01-31", "2024-03-15"),
    ];
    for (label, span, start, expected) in rows {
        let end = span.after(day(start));
        assert_eq!(end, day(expected), "{label}: {start} + {span}");
    }
}

#[test]
fn span_after_saturates_instead_of_overflowing() {
    let start = day("2025-01-31");
    assert_eq!(Span::months(u32::MAX).after(start), NaiveDate::MAX);
    assert_eq!(Span::days(u32::MAX).after(start), NaiveDate::MAX);
    assert_eq!(
        Span::months(u32::MAX).plus(Span::months(1)),
        Span::months(u32::MAX)
    );
}
