//! Reading the page: its figures, and how they match the statistics.

use super::*;

/// One figure on the page: its `data-stat` path, its `data-value` and the text shown.
#[derive(Debug)]
pub(crate) struct Figure {
    pub(crate) path: String,
    pub(crate) value: f64,
    pub(crate) text: String,
}

pub(crate) fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_owned())
}

/// Every element marked `data-stat`, from served HTML or a browser's serialized DOM.
pub(crate) fn figures(html: &str) -> Vec<Figure> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(" data-stat=\"") {
        let open = rest[..at].rfind('<').unwrap();
        let close = at + rest[at..].find('>').unwrap();
        let tag = &rest[open..close];
        let text_end = close + 1 + rest[close + 1..].find('<').unwrap();
        let path = attribute(tag, "data-stat").unwrap();
        let value = attribute(tag, "data-value")
            .unwrap_or_else(|| panic!("{path} has no data-value"))
            .parse()
            .unwrap_or_else(|e| panic!("{path}: data-value is not a number: {e}"));
        found.push(Figure {
            path,
            value,
            text: rest[close + 1..text_end].trim().to_owned(),
        });
        rest = &rest[close..];
    }
    found
}

/// The numbers of `GET /v1/stats`, by path (`by_status.completed`, `cleaners.crm.attempts`),
/// and whether each is a count.
pub(crate) fn flatten(value: &Value, prefix: &str, out: &mut BTreeMap<String, (f64, bool)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(inner, &path, out);
            }
        }
        Value::Number(n) => {
            out.insert(prefix.to_owned(), (n.as_f64().unwrap(), n.is_u64()));
        }
        _ => {}
    }
}

/// Seconds from a shown duration such as `12.3 s`, `4.2 min`, `3.1 h` or `2.0 d`.
pub(crate) fn shown_seconds(text: &str) -> Option<f64> {
    let (number, unit) = text.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Every figure on the page equals `GET /v1/stats`, every figure there is on the page, and the
/// text shown agrees with the value.
pub(crate) fn assert_page_matches_stats(html: &str, stats: &Value) {
    let mut expected = BTreeMap::new();
    flatten(stats, "", &mut expected);
    let shown = figures(html);
    for figure in &shown {
        let path = &figure.path;
        let (want, is_count) = match expected.get(path) {
            Some(found) => *found,
            // A status no request has is absent from the JSON and shown as 0.
            None if path.starts_with("by_status.") => (0.0, true),
            None => panic!("the page shows {path}, which GET /v1/stats does not have"),
        };
        assert!(
            (figure.value - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{path}: page {} vs GET /v1/stats {want}",
            figure.value
        );
        let text = figure.text.as_str();
        if is_count {
            assert_eq!(text, format!("{want}"), "{path} is shown as {text:?}");
        } else if path.ends_with(".success_rate") {
            let pct: f64 = text.trim_end_matches('%').parse().unwrap();
            assert!(
                (pct - want * 100.0).abs() <= 0.05,
                "{path}: {text} vs {want}"
            );
        } else if path.ends_with("_days") {
            let days: f64 = text.parse().unwrap();
            assert!((days - want).abs() <= 0.05, "{path}: {text} vs {want}");
        } else if path.ends_with("_seconds") && text != "–" {
            let seconds = shown_seconds(text).unwrap_or_else(|| panic!("{path}: {text:?}"));
            assert!(
                (seconds - want).abs() <= want * 0.05 + 0.05,
                "{path}: {text} vs {want}"
            );
        }
    }
    for path in expected.keys() {
        assert!(
            shown.iter().any(|f| &f.path == path),
            "GET /v1/stats has {path}, the page does not show it"
        );
    }
}

/// The request ids listed in the section with this `id`, in order.
pub(crate) fn listed(html: &str, section: &str) -> Vec<String> {
    let start = html
        .find(&format!("id=\"{section}\""))
        .unwrap_or_else(|| panic!("no section {section}"));
    let end = start + html[start..].find("</section>").unwrap();
    let mut ids = Vec::new();
    let mut rest = &html[start..end];
    while let Some(at) = rest.find("data-request=\"") {
        let value = &rest[at + 14..];
        let stop = value.find('"').unwrap();
        ids.push(value[..stop].to_owned());
        rest = &value[stop..];
    }
    ids
}

/// The workload's figures, known independently of the code under test.
pub(crate) fn assert_known_workload(stats: &Value) {
    let expect = [
        ("total", 12),
        ("overdue", 1),
        ("at_risk", 2),
        ("at_risk_days", 7),
        ("by_status.completed", 4),
        ("by_status.pending", 3),
        ("by_status.due", 1),
        ("by_status.needs_attention", 1),
        ("by_status.on_hold", 1),
        ("by_status.cancelled", 1),
        ("by_status.rejected", 1),
        ("cleaners.billing.attempts", 6),
        ("cleaners.billing.succeeded", 5),
        ("cleaners.crm.attempts", 7),
        ("cleaners.crm.succeeded", 4),
        ("cleaners.crm.exhausted", 1),
    ];
    let mut flat = BTreeMap::new();
    flatten(stats, "", &mut flat);
    for (path, want) in expect {
        assert_eq!(flat.get(path).map(|v| v.0), Some(f64::from(want)), "{path}");
    }
    let completed: f64 = flat
        .iter()
        .filter(|(k, _)| k.starts_with("completion.") && k.ends_with(".completed"))
        .map(|(_, v)| v.0)
        .sum();
    assert!((completed - 4.0).abs() < f64::EPSILON);
}
