//! JSON Schema for the inputs whose rules utoipa's attributes cannot state alone: patterns
//! written from the validators' own rules (what `str::trim` removes, what `char::is_control`
//! refuses, the grammar of a span or an event id), so that `/openapi.json` tells a client
//! every rule the server enforces. `engine/tests/openapi/` holds each pattern to its
//! validator on generated strings.
//!
//! Patterns use only what ECMA-262 and Python's `re` read alike (`\uXXXX` escapes, classes,
//! bounded repetition), anchored at both ends.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{OpenApi, Ref, RefOr, Required, SchemaFormat};
use utoipa::IntoParams;

use crate::app::{MAX_EXTERNAL_ID_LEN, MAX_REASON_LEN, MAX_SOURCE_LEN, MAX_TAGS, MAX_TAG_LEN};

/// The longest reason of an operation, or detail of a cleaner's result, in characters once
/// trimmed.
pub(super) const MAX_DETAIL_LEN: usize = 1024;

/// Unicode `White_Space`: what `str::trim` removes.
const SPACE: &str =
    r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Unicode category Cc: what `char::is_control` matches.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
/// The white space that is not a control character: all a query value may hold (the edge
/// of the API refuses control characters in a path or query, see `edge.rs`).
const QUERY_SPACE: &str = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// Free text that is trimmed, may be blank (then it counts as absent), and once trimmed is at
/// most `max` characters without a control character. (The limit applies to the trimmed
/// text, which `maxLength` cannot say.)
pub fn optional_text_pattern(max: usize) -> String {
    format!("^[{SPACE}]*(?:{})?[{SPACE}]*$", trimmed(max))
}

/// Free text that is trimmed, must not be blank, and once trimmed is at most `max` characters
/// without a control character.
pub fn required_text_pattern(max: usize) -> String {
    format!("^[{SPACE}]*{}[{SPACE}]*$", trimmed(max))
}

/// 1 to `max` characters, none a control character, the first and last not white space.
fn trimmed(max: usize) -> String {
    let visible = format!("[^{CONTROL}{SPACE}]");
    format!(
        "{visible}(?:[^{CONTROL}]{{0,{}}}{visible})?",
        max.saturating_sub(2)
    )
}

/// A subject's identifier value: not blank, and no control character anywhere.
pub fn identifier_value_pattern() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")
}

/// An identifier kind (`user_id`, `email`): see `lethe_domain::subject`.
pub const IDENTIFIER_KIND_PATTERN: &str = "^[a-z][a-z0-9_]{0,31}$";
/// A cleaner's name (`CleanerName`).
pub const CLEANER_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";
/// A jurisdiction's name (`Jurisdiction`); `/openapi.json` lists the configured ones instead.
pub const JURISDICTION_PATTERN: &str = "^[a-z][a-z0-9_-]{0,31}$";

/// Decimal digits (leading zeros allowed) of a number from 0 to `max`.
fn at_most(max: u64) -> String {
    let digits: Vec<u8> = max.to_string().into_bytes();
    let n = digits.len();
    // Fewer digits than `max`, or as many with a smaller digit after a common prefix, or `max`.
    let mut choices = Vec::new();
    if n > 1 {
        choices.push(format!("[0-9]{{1,{}}}", n - 1));
    }
    for i in 0..n {
        if digits[i] > b'0' {
            let prefix = String::from_utf8_lossy(&digits[..i]);
            let below = char::from(digits[i] - 1);
            let rest = n - i - 1;
            choices.push(format!("{prefix}[0-{below}][0-9]{{{rest}}}"));
        }
    }
    choices.push(String::from_utf8_lossy(&digits).into_owned());
    format!("0*(?:{})", choices.join("|"))
}

/// A span of time (`Span`'s grammar): numbers with a unit, e.g. `1 month`, `45d`,
/// `1 month 15 days`, each number at most 4294967295.
pub fn span_pattern() -> String {
    let number = at_most(u64::from(u32::MAX));
    format!("^[{SPACE}]*(?:{number}[{SPACE}]*(?:days|day|d|months|month)[{SPACE}]*)+$")
}

/// An event id of the feed, `TRANSACTION-POSITION` (`Checkpoint`): two numbers from 0 to
/// 2^63-1, as Rust reads an `i64` (a `+` may lead; the position may be `-0`, which is 0; the
/// transaction cannot, as the first `-` separates the two).
fn checkpoint_text() -> String {
    let number = format!(r"\+?{}", at_most(i64::MAX.unsigned_abs()));
    format!("{number}-(?:{number}|-0+)")
}

/// `after`: an event id, trimmed (of the white space a query value may hold).
pub fn checkpoint_pattern() -> String {
    format!("^[{QUERY_SPACE}]*{}[{QUERY_SPACE}]*$", checkpoint_text())
}

/// `Last-Event-ID`: an event id, or blank for none.
pub fn last_event_id_pattern() -> String {
    format!("^[{SPACE}]*(?:{}[{SPACE}]*)?$", checkpoint_text())
}

/// `types`: event type names, comma-separated, each trimmed.
pub fn event_types_pattern() -> String {
    let names = lethe_domain::event::EVENT_TYPES.join("|");
    let one = format!("[{QUERY_SPACE}]*(?:{names})[{QUERY_SPACE}]*");
    format!("^{one}(?:,{one})*$")
}

/// An `Idempotency-Key` header: 1-255 visible ASCII characters once trimmed, spaces and tabs inside.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[\u0009\u0020]*[\u0021-\u007e](?:[\u0009\u0020-\u007e]{0,253}[\u0021-\u007e])?[\u0009\u0020]*$";

fn text(pattern: String, nullable: bool) -> ObjectBuilder {
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .pattern(Some(pattern))
}

fn optional_text(max: usize, what: &str) -> Schema {
    text(optional_text_pattern(max), true)
        .description(Some(format!(
            "{what}: at most {max} characters once trimmed, no control characters; blank is \
             the same as absent."
        )))
        .into()
}

/// `SubmitBody.subject`.
pub fn subject() -> Schema {
    let value = text(identifier_value_pattern(), false)
        .max_length(Some(lethe_domain::subject::MAX_VALUE_LEN));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "Identifiers of the data subject by kind, 1-{} of them. A kind is 1-{} characters \
             of a-z, 0-9 and `_`, starting with a letter; a value is at most {} characters, \
             not blank, without control characters.",
            lethe_domain::subject::MAX_SUBJECT_KINDS,
            lethe_domain::subject::MAX_KIND_LEN,
            lethe_domain::subject::MAX_VALUE_LEN,
        )))
        .min_properties(Some(1))
        .max_properties(Some(lethe_domain::subject::MAX_SUBJECT_KINDS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IDENTIFIER_KIND_PATTERN)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            value.build().into(),
        ))))
        .into()
}

/// `SubmitBody.jurisdiction`; [`super::api`] replaces the pattern with the configured names.
pub fn jurisdiction() -> Schema {
    text(JURISDICTION_PATTERN.to_owned(), true)
        .description(Some(
            "A configured jurisdiction (`gdpr` and `ccpa` are built in); absent: `[policy] \
             default_jurisdiction`.",
        ))
        .into()
}

/// The jurisdiction of `GET /v1/reports/annual`: any jurisdiction's name, configured or not
/// (a past year may hold requests of one no longer configured).
pub fn report_jurisdiction() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(JURISDICTION_PATTERN))
        .into()
}

pub fn source() -> Schema {
    optional_text(MAX_SOURCE_LEN, "Where the request came from")
}

pub fn submission_reason() -> Schema {
    optional_text(MAX_REASON_LEN, "Why the subject asks")
}

pub fn external_id() -> Schema {
    optional_text(
        MAX_EXTERNAL_ID_LEN,
        "The caller's own id; a second submission with it returns the first request",
    )
}

pub fn tags() -> Schema {
    ArrayBuilder::new()
        .items(text(required_text_pattern(MAX_TAG_LEN), false))
        .max_items(Some(MAX_TAGS))
        .description(Some(format!(
            "At most {MAX_TAGS} tags, each at most {MAX_TAG_LEN} characters once trimmed, not blank, \
             without control characters."
        )))
        .into()
}

/// A reason an operation may go without (cancel, release).
pub fn optional_reason() -> Schema {
    optional_text(MAX_DETAIL_LEN, "Why")
}

/// A reason an operation requires (reject, hold, skip, extend).
pub fn required_reason() -> Schema {
    text(required_text_pattern(MAX_DETAIL_LEN), false)
        .description(Some(format!(
            "Why: at most {MAX_DETAIL_LEN} characters once trimmed, not blank, no control \
             characters."
        )))
        .into()
}

pub fn span() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(span_pattern()))
        .description(Some(
            "How much longer: numbers with a unit (`d`, `day`, `days`, `month`, `months`), \
             e.g. `1 month`, `45d`, `1 month 15 days`; more than nothing, and within the \
             jurisdiction's maximum extension (else 422).",
        ))
        .into()
}

pub fn request_id() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .into()
}

pub fn checkpoint() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(checkpoint_pattern()))
        .into()
}

pub fn event_types() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(event_types_pattern()))
        .into()
}

/// Any query value: the edge of the API refuses control characters in it.
pub fn query_text_pattern() -> String {
    format!("^[^{CONTROL}]*$")
}

/// A query value with no rule of its own but the edge's.
pub fn query_text() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(query_text_pattern()))
        .into()
}

/// A cleaner's name in a query (`cleaner` of the request list).
pub fn cleaner_name() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CLEANER_NAME_PATTERN))
        .into()
}

/// `received_from` / `received_to`: an RFC 3339 time or a date.
pub fn time_or_date() -> Schema {
    let format = |f| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(f)))
            .build()
    };
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(format(utoipa::openapi::KnownFormat::DateTime))
        .item(format(utoipa::openapi::KnownFormat::Date))
        .into()
}

/// `at` of a request's state: a log position, an RFC 3339 time or a date.
pub fn position_time_or_date() -> Schema {
    let format = |f| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(f)))
            .build()
    };
    let position = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .build();
    utoipa::openapi::schema::OneOfBuilder::new()
        .item(position)
        .item(format(utoipa::openapi::KnownFormat::DateTime))
        .item(format(utoipa::openapi::KnownFormat::Date))
        .into()
}

/// `status` of the request list: one of the statuses.
pub fn status() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(
            lethe_domain::RequestStatus::ALL.map(|status| status.as_str()),
        ))
        .into()
}

fn parameter(
    name: &str,
    location: ParameterIn,
    required: bool,
    description: &str,
    schema: Schema,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

fn request_id_parameter() -> Parameter {
    parameter(
        "id",
        ParameterIn::Path,
        true,
        "The request id",
        request_id(),
    )
}

/// The path of a route on one request: `{id}`.
#[derive(Debug)]
pub struct RequestPath;

impl IntoParams for RequestPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![request_id_parameter()]
    }
}

/// The path of a route on one cleaner of one request: `{id}` and `{name}`.
#[derive(Debug)]
pub struct CleanerPath;

impl IntoParams for CleanerPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            request_id_parameter(),
            parameter(
                "name",
                ParameterIn::Path,
                true,
                "The cleaner's name",
                cleaner_name(),
            ),
        ]
    }
}

/// The `Idempotency-Key` header of a command.
#[derive(Debug)]
pub struct IdempotencyKey;

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
            .into();
        vec![parameter(
            "Idempotency-Key",
            ParameterIn::Header,
            false,
            "A retry with the same key (by the same caller) returns the first result instead \
             of acting again",
            schema,
        )]
    }
}

/// The `Last-Event-ID` header of the event feed.
#[derive(Debug)]
pub struct LastEventId;

impl IntoParams for LastEventId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(last_event_id_pattern()))
            .into();
        vec![parameter(
            "Last-Event-ID",
            ParameterIn::Header,
            false,
            "Resume after this event id (sent by an SSE client when it reconnects); takes \
             precedence over `after`; blank: none",
            schema,
        )]
    }
}

/// The body of an operation that requires a reason (reject, hold, skip). The handlers read it
/// as [`super::admin::ReasonBody`] and then require the reason, so that a missing one is named
/// like any other field; this states the rule in the schema.
#[derive(Debug)]
pub struct RequiredReasonBody;

impl utoipa::PartialSchema for RequiredReasonBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("reason", required_reason())
            .required("reason")
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
            .into()
    }
}

impl utoipa::ToSchema for RequiredReasonBody {}

/// One line of the answer to a bulk intake.
#[derive(Debug)]
pub struct BulkResult;

impl utoipa::PartialSchema for BulkResult {
    fn schema() -> RefOr<Schema> {
        let line = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .description(Some("The input line's number (from 1)"))
        };
        let accepted = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("line", line())
            .property("id", request_id())
            .property("status", status())
            .property(
                "created",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("false: the subject's request already existed")),
            )
            .required("line")
            .required("id")
            .required("status")
            .required("created");
        let refused = ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A line that was refused; without `line`, the last line of an answer whose body \
                 was cut short",
            ))
            .property("line", line())
            .property("error", Ref::from_schema_name("Problem"))
            .required("error");
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(accepted)
            .item(refused)
            .into()
    }
}

impl utoipa::ToSchema for BulkResult {}

/// Fixes on the assembled document what utoipa's derive states loosely: a body that may be
/// left out (`Option<T>` in `request_body`) is `required: false`, and utoipa also makes it
/// nullable, which the server does not take (an empty body is no body; `null` is refused).
pub fn refine(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let Some(body) = operation.request_body.as_mut() else {
                continue;
            };
            if matches!(body.required, Some(Required::True)) {
                continue;
            }
            for content in body.content.values_mut() {
                match &mut content.schema {
                    Some(RefOr::T(Schema::OneOf(one_of))) => {
                        let mut items = one_of.items.iter().filter(|item| !is_null(item));
                        if let (Some(only), None) = (items.next(), items.next()) {
                            content.schema = Some(only.clone());
                        }
                    }
                    Some(RefOr::T(Schema::Array(array))) => {
                        array.schema_type = SchemaType::Type(Type::Array);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(object))
        if object.schema_type == SchemaType::Type(Type::Null))
}

/// States the jurisdictions this server is configured with as the only ones a submission may
/// name (any other is refused with 400).
pub fn configured_jurisdictions<'a>(
    openapi: &mut OpenApi,
    names: impl IntoIterator<Item = &'a str>,
) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(body))) = components.schemas.get_mut("SubmitBody") else {
        return;
    };
    let Some(RefOr::T(Schema::Object(jurisdiction))) = body.properties.get_mut("jurisdiction")
    else {
        return;
    };
    let mut values: Vec<serde_json::Value> = names.into_iter().map(Into::into).collect();
    values.push(serde_json::Value::Null);
    jurisdiction.pattern = None;
    jurisdiction.max_length = None;
    jurisdiction.enum_values = Some(values);
}

/// `deleted` of a cleaner's result: how many records of each kind.
pub fn counts() -> Schema {
    let count = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(u64::MAX));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
            count.build().into(),
        ))))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_admits_exactly_the_numbers_up_to_its_bound() {
        for max in [0, 7, 10, 99, 100, 4_294_967_295, i64::MAX.unsigned_abs()] {
            let pattern = regex::Regex::new(&format!("^{}$", at_most(max))).unwrap();
            let around = |n: u64| n.saturating_sub(300)..=n.saturating_add(300);
            let mut numbers: Vec<u128> = around(max).chain(0..=300).map(u128::from).collect();
            numbers.extend([u128::from(max) * 10, u128::from(max) * 10 + 9, u128::MAX]);
            for n in numbers {
                for text in [n.to_string(), format!("000{n}")] {
                    assert_eq!(
                        pattern.is_match(&text),
                        n <= u128::from(max),
                        "{text} against at most {max}"
                    );
                }
            }
            assert!(!pattern.is_match(""));
        }
    }
}
