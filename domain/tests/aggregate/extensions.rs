//! Deadline extensions.

use super::*;

// --- Deadline extensions -------------------------------------------------------------------------

fn extend(by: Span) -> Command {
    Command::ExtendDeadline {
        at: during_grace(),
        by,
        reason: "many systems to search".to_owned(),
    }
}

fn extended(by: Span, deadline: chrono::NaiveDate) -> Event {
    Event::DeadlineExtended(DeadlineExtended {
        at: during_grace(),
        by,
        reason: "many systems to search".to_owned(),
        deadline,
    })
}

#[test]
fn an_extension_within_the_maximum_moves_the_deadline() {
    // Received 3 March: one month gives 3 April, one more month 3 May.
    let state = given([received()])
        .when(extend(Span::months(1)))
        .then_expect_events(vec![extended(Span::months(1), date(2025, 5, 3))]);
    let request = request(&state);
    assert_eq!(request.deadline, date(2025, 5, 3));
    assert_eq!(request.extension, Span::months(1));
}

#[test]
fn extensions_add_up_to_the_maximum() {
    given([received(), extended(Span::months(1), date(2025, 5, 3))])
        .when(extend(Span::months(1)))
        .then_expect_events(vec![extended(Span::months(1), date(2025, 6, 3))]);
}

#[test]
fn an_extension_beyond_the_maximum_is_refused() {
    given([received()])
        .when(extend(Span { months: 2, days: 1 }))
        .then_expect_error(DomainError::ExtensionExceedsMaximum {
            requested: date(2025, 6, 4),
            maximum: date(2025, 6, 3),
        });
    given([received(), extended(Span::months(2), date(2025, 6, 3))])
        .when(extend(Span::days(1)))
        .then_expect_error(DomainError::ExtensionExceedsMaximum {
            requested: date(2025, 6, 4),
            maximum: date(2025, 6, 3),
        });
}

#[test]
fn an_empty_extension_is_refused() {
    given([received()])
        .when(extend(Span::default()))
        .then_expect_error(DomainError::EmptyExtension);
}

#[test]
fn an_extension_needs_a_reason() {
    given([received()])
        .when(Command::ExtendDeadline {
            at: during_grace(),
            by: Span::months(1),
            reason: String::new(),
        })
        .then_expect_error(DomainError::ReasonRequired);
}
