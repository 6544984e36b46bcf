//! The administrator's actions on a request page (`POST /dashboard/requests/{id}/actions`):
//! hold, release, extend, expedite, approve, reject, and retry or skip a cleaner. Each is a
//! form with a reason, an "I confirm" box and the session's CSRF token ([`super::csrf`]); the
//! POST is checked (session, CSRF, the scope the matching API route requires, confirmation,
//! input), calls the same application service as `admin.rs` with the actor the API records
//! (`token:<name>`), and sends the browser back to the request page (303), where the outcome
//! is shown once: done, or the domain's refusal in words (ADR 35).

use std::fmt::Write as _;

use axum::extract::{FromRequest, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::Engine as _;
use lethe_domain::{CleanerName, RequestId, Span};
use serde::Deserialize;

use super::auth::{named_cookie, on_request, secure};
use super::html::Esc;
use super::{common_headers, csrf, error_page, message_page};
use crate::app::views::{CleanerView, RequestView};
use crate::app::{text_field, EventMetadata, LoadedRequest, RequestError};
use crate::http::auth::Principal;
use crate::http::schema::MAX_DETAIL_LEN;
use crate::http::AppState;

/// The cookie that carries an action's outcome to the request page, once.
const OUTCOME: &str = "lethe_outcome";
/// The most days one extension form may add (the jurisdiction's maximum still applies).
const MAX_DAYS: u32 = 366;

/// An action form's fields.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionForm {
    /// hold, release, extend, expedite, approve, reject, retry or skip
    #[schema(example = "hold")]
    action: Option<String>,
    /// The cleaner, for retry and skip.
    cleaner: Option<String>,
    /// Why: recorded in the action's event (and in the server's log).
    reason: Option<String>,
    /// Days to add, for extend (1-366).
    days: Option<String>,
    /// Must be `yes`: the "I confirm" box.
    confirm: Option<String>,
    /// The session's CSRF token, from the page's hidden field.
    csrf: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hold,
    Release,
    Extend,
    Expedite,
    Approve,
    Reject,
    Retry,
    Skip,
}

impl Kind {
    const REQUEST: [Self; 6] = [
        Self::Hold,
        Self::Release,
        Self::Extend,
        Self::Expedite,
        Self::Approve,
        Self::Reject,
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::REQUEST
            .into_iter()
            .chain([Self::Retry, Self::Skip])
            .find(|k| k.name() == name)
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Release => "release",
            Self::Extend => "extend",
            Self::Expedite => "expedite",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Retry => "retry",
            Self::Skip => "skip",
        }
    }

    const fn label(self) -> &'static str {
        match self {
            Self::Hold => "Place on hold",
            Self::Release => "Release the hold",
            Self::Extend => "Extend the deadline",
            Self::Expedite => "Expedite (due now)",
            Self::Approve => "Approve",
            Self::Reject => "Reject",
            Self::Retry => "Retry",
            Self::Skip => "Skip",
        }
    }

    /// Whether `principal` holds the scope the matching API route requires.
    fn allowed(self, principal: &Principal) -> bool {
        principal.has("admin") || (self == Self::Approve && principal.has("requests:approve"))
    }
}

/// A checked action, ready for the application service.
struct Action {
    kind: Kind,
    cleaner: Option<CleanerName>,
    reason: String,
    days: u32,
}

#[utoipa::path(
    post,
    path = "/dashboard/requests/{id}/actions",
    tag = "service",
    params(crate::http::schema::RequestPath),
    request_body(content = ActionForm, content_type = "application/x-www-form-urlencoded", description = "An action form of the request page"),
    responses(
        (status = 303, description = "Done, or refused by the request's state: the browser is sent back to the request page, which shows the outcome once (cookie `lethe_outcome`)", headers(("Location" = String), ("Set-Cookie" = String))),
        (status = 401, description = "No valid token (HTML)", body = String, content_type = "text/html"),
        (status = 403, description = "The CSRF token is missing or wrong, the form came from another site, or the token lacks the scope the action needs (admin; for approve, requests:approve or admin) (HTML)", body = String, content_type = "text/html"),
        (status = 404, description = "No such request (HTML)", body = String, content_type = "text/html"),
        (status = 409, description = "The request kept changing while the action was decided; send it again (HTML)", body = String, content_type = "text/html"),
        (status = 415, description = "The body is not a form (HTML)", body = String, content_type = "text/html"),
        (status = 503, description = "The database is unreachable (HTML)", body = String, content_type = "text/html"),
        crate::http::responses::DashboardPage,
    ),
    security(("bearer" = ["admin"]), ("bearer" = ["requests:approve"]))
)]
pub async fn act(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    // Who is asking and whether the id is one are checked before the body is read.
    let (session, id) = match on_request(state.requests.config(), &headers, &id) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    let form = match Form::<ActionForm>::from_request(request, &state).await {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let status = match rejection.status() {
                s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            return refused(status, &rejection.body_text());
        }
    };
    if let Err(why) = csrf::check(&state.key, &session.token, &headers, form.csrf.as_deref()) {
        return refused(StatusCode::FORBIDDEN, &why);
    }
    let action = match checked(&form, &session.principal) {
        Ok(action) => action,
        Err((status, why)) => return refused(status, &why),
    };
    let metadata = EventMetadata::new(&session.principal.actor);
    tracing::info!(
        request.id = %id,
        actor = %metadata.actor,
        action = action.kind.name(),
        reason = %action.reason,
        "dashboard action"
    );
    let outcome = match run(&state, id, &metadata, &action).await {
        Ok(_) => Outcome::done(&action),
        Err(RequestError::Rejected(why)) => Outcome::refused(&action, &why.to_string()),
        Err(error) => return error_page(error),
    };
    outcome.redirect(id, &headers)
}

/// The form checked: the action, its scope, the confirmation, the reason and the days.
fn checked(form: &ActionForm, principal: &Principal) -> Result<Action, (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let name = form.action.as_deref().unwrap_or_default();
    let kind = Kind::parse(name).ok_or_else(|| {
        bad(format!(
            "action: {name:?} is not one of hold, release, extend, expedite, approve, reject, \
             retry, skip"
        ))
    })?;
    if !kind.allowed(principal) {
        let scope = if kind == Kind::Approve {
            "requests:approve (or admin)"
        } else {
            "admin"
        };
        return Err((
            StatusCode::FORBIDDEN,
            format!("this token lacks the scope {scope}, which {name} needs"),
        ));
    }
    if form.confirm.as_deref() != Some("yes") {
        return Err(bad(format!(
            "confirm: tick \"I confirm\" to {name}; nothing was done"
        )));
    }
    let reason = text_field("reason", form.reason.clone(), MAX_DETAIL_LEN)
        .map_err(|e| bad(format!("{}: {}", e.field, e.message)))?
        .ok_or_else(|| bad("reason: is required".to_owned()))?;
    let cleaner = match kind {
        Kind::Retry | Kind::Skip => Some(
            CleanerName::parse(form.cleaner.as_deref().unwrap_or_default())
                .map_err(|e| bad(format!("cleaner: {}", e.message)))?,
        ),
        _ => None,
    };
    let days = if kind == Kind::Extend {
        form.days
            .as_deref()
            .and_then(|d| d.trim().parse::<u32>().ok())
            .filter(|d| (1..=MAX_DAYS).contains(d))
            .ok_or_else(|| {
                bad(format!(
                    "days: must be a whole number of days, 1-{MAX_DAYS}"
                ))
            })?
    } else {
        0
    };
    Ok(Action {
        kind,
        cleaner,
        reason,
        days,
    })
}

/// The application service's command for `action`, as `admin.rs` calls it.
async fn run(
    state: &AppState,
    id: RequestId,
    metadata: &EventMetadata,
    action: &Action,
) -> Result<LoadedRequest, RequestError> {
    let requests = &state.requests;
    let reason = action.reason.clone();
    match (action.kind, &action.cleaner) {
        (Kind::Hold, _) => requests.hold(id, metadata, reason).await,
        (Kind::Release, _) => requests.release(id, metadata, Some(reason)).await,
        (Kind::Extend, _) => {
            let by = Span::days(action.days);
            requests.extend(id, metadata, by, reason).await
        }
        (Kind::Expedite, _) => requests.expedite(id, metadata, Some(reason)).await,
        (Kind::Approve, _) => requests.approve(id, metadata, Some(reason)).await,
        (Kind::Reject, _) => requests.reject(id, metadata, reason).await,
        (Kind::Retry, Some(cleaner)) => {
            requests
                .retry_cleaner(id, metadata, cleaner, Some(reason))
                .await
        }
        (Kind::Skip, Some(cleaner)) => requests.skip_cleaner(id, metadata, cleaner, reason).await,
        (Kind::Retry | Kind::Skip, None) => unreachable!("checked() names the cleaner"),
    }
}

/// A refused POST: a page saying why, with the way back.
fn refused(status: StatusCode, why: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        _ => "Nothing was done",
    };
    message_page(
        status,
        title,
        &format!(
            "<span data-refusal>{}</span> Go back to the request page to try again.",
            Esc(why)
        ),
    )
}

/// What became of an action, carried to the request page in a cookie of that page's path.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    done: bool,
    message: String,
}

impl Outcome {
    fn done(action: &Action) -> Self {
        let cleaner = action.cleaner.as_ref().map(ToString::to_string);
        let cleaner = cleaner.as_deref().unwrap_or_default();
        let message = match action.kind {
            Kind::Hold => "Placed on hold.".to_owned(),
            Kind::Release => "The hold is released.".to_owned(),
            Kind::Extend => format!("The deadline is extended by {} days.", action.days),
            Kind::Expedite => "Expedited: the request is due now.".to_owned(),
            Kind::Approve => "Approved: the grace period starts now.".to_owned(),
            Kind::Reject => "Rejected.".to_owned(),
            Kind::Retry => format!("Cleaner {cleaner} gets another round of attempts."),
            Kind::Skip => format!("Cleaner {cleaner} is skipped."),
        };
        Self {
            done: true,
            message,
        }
    }

    fn refused(action: &Action, why: &str) -> Self {
        let what = match &action.cleaner {
            Some(cleaner) => format!("{} cleaner {cleaner}", action.kind.name()),
            None => action.kind.name().to_owned(),
        };
        Self {
            done: false,
            message: format!("cannot {what}: {why}"),
        }
    }

    fn redirect(&self, id: RequestId, headers: &HeaderMap) -> Response {
        let text = format!("{}{}", if self.done { 'y' } else { 'n' }, self.message);
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let mut response = StatusCode::SEE_OTHER.into_response();
        let out = response.headers_mut();
        common_headers(out);
        if let Ok(location) = HeaderValue::from_str(&format!("/dashboard/requests/{id}")) {
            out.insert(header::LOCATION, location);
        }
        let cookie = format!(
            "{OUTCOME}={value}; Path=/dashboard/requests/{id}; Max-Age=300; HttpOnly; \
             SameSite=Strict{}",
            secure(headers)
        );
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            out.insert(header::SET_COOKIE, cookie);
        }
        response
    }

    /// The `Set-Cookie` that removes the outcome once shown.
    pub(super) fn clear(id: RequestId) -> String {
        format!("{OUTCOME}=; Path=/dashboard/requests/{id}; Max-Age=0; HttpOnly; SameSite=Strict")
    }

    pub(super) fn render(&self, out: &mut String) {
        let (class, kind) = if self.done {
            ("ok", "done")
        } else {
            ("bad", "refused")
        };
        put!(
            out,
            "<p class=\"outcome {class}\" data-outcome=\"{kind}\" role=\"status\">{}</p>\n",
            Esc(&self.message)
        );
    }
}

/// The outcome the last action left for this page, if any.
pub(super) fn take_outcome(headers: &HeaderMap) -> Option<Outcome> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(named_cookie(headers, OUTCOME)?)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut chars = text.chars();
    let done = match chars.next()? {
        'y' => true,
        'n' => false,
        _ => return None,
    };
    Some(Outcome {
        done,
        message: chars.as_str().to_owned(),
    })
}

/// One action's form: the hidden fields, a reason, the days for extend, and "I confirm".
fn form(out: &mut String, id: RequestId, kind: Kind, cleaner: Option<&str>, csrf: &str) {
    let reason_note = "recorded in the event";
    put!(
        out,
        "<form method=\"post\" action=\"/dashboard/requests/{id}/actions\" class=\"action\" \
         data-action=\"{name}\"{cleaner_attr}>\
         <input type=\"hidden\" name=\"{field}\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"action\" value=\"{name}\">",
        name = kind.name(),
        cleaner_attr = cleaner
            .map(|c| format!(" data-cleaner=\"{}\"", Esc(c)))
            .unwrap_or_default(),
        field = csrf::FIELD,
        csrf = Esc(csrf),
    );
    if let Some(cleaner) = cleaner {
        put!(
            out,
            "<input type=\"hidden\" name=\"cleaner\" value=\"{}\">",
            Esc(cleaner)
        );
    }
    if kind == Kind::Extend {
        put!(
            out,
            "<label>Days <input type=\"number\" name=\"days\" min=\"1\" max=\"{MAX_DAYS}\" \
             required></label>"
        );
    }
    put!(
        out,
        "<label>Reason <input type=\"text\" name=\"reason\" required maxlength=\"{MAX_DETAIL_LEN}\" \
         title=\"{reason_note}\" placeholder=\"{reason_note}\"></label>\
         <label class=\"confirm\"><input type=\"checkbox\" name=\"confirm\" value=\"yes\" \
         required> I confirm</label>\
         <button type=\"submit\">{}</button></form>\n",
        kind.label()
    );
}

/// The request's action forms that `principal` may use (none without the scope), while the
/// request is open.
pub(super) fn forms(out: &mut String, principal: &Principal, view: &RequestView, csrf: &str) {
    let kinds: Vec<Kind> = Kind::REQUEST
        .into_iter()
        .filter(|k| k.allowed(principal))
        .collect();
    if kinds.is_empty() {
        return;
    }
    out.push_str("<section class=\"card\" id=\"actions\">\n<h2>Actions</h2>\n");
    if view.status.is_closed() {
        out.push_str("<p class=\"empty\">The request is closed: no action applies.</p>\n");
    } else {
        for kind in kinds {
            form(out, view.id, kind, None, csrf);
        }
        out.push_str(
            "<p class=\"note\">Each action is recorded with this token's name as its actor, as \
             the API records it; the request's state decides whether it is allowed.</p>\n",
        );
    }
    out.push_str("</section>\n");
}

/// A cleaner's forms: retry once it is exhausted, skip until it is done.
pub(super) fn cleaner_forms(
    out: &mut String,
    principal: &Principal,
    view: &RequestView,
    cleaner: &CleanerView,
    csrf: &str,
) {
    if !Kind::Retry.allowed(principal) || view.status.is_closed() {
        return;
    }
    if cleaner.status == "exhausted" {
        form(out, view.id, Kind::Retry, Some(&cleaner.name), csrf);
    }
    if matches!(cleaner.status, "pending" | "exhausted") {
        form(out, view.id, Kind::Skip, Some(&cleaner.name), csrf);
    }
}
