//! Signed completion receipts (docs/AUDIT.md#receipts): a completed request's receipt, and the
//! public keys that check them.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::auth::{AuditRead, Caller};
use super::problem::Problem;
use super::{request_id, responses, schema, AppState};
use crate::app::receipt::{public_keys, Receipt, ReceiptKeysView};

#[utoipa::path(
    get,
    path = "/v1/requests/{id}/receipt",
    tag = "audit",
    params(schema::RequestPath),
    responses(
        (status = 200, description = "The request's signed receipt, as `lethe receipt verify` checks it: its bytes are the receipt file", body = Receipt),
        (status = 409, description = "The request is not completed", body = Problem, content_type = "application/problem+json"),
        responses::OneRequest,
    ),
    security(("bearer" = ["audit:read"]))
)]
pub async fn receipt(
    State(state): State<AppState>,
    _: Caller<AuditRead>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = request_id(&id)?;
    let receipt = state.requests.receipt(id, &state.key).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        receipt.to_bytes(),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/receipt-keys",
    tag = "audit",
    responses(
        (status = 200, description = "The public keys that check receipts, by key id: the one receipts are signed with now first", body = ReceiptKeysView),
        responses::Service,
    )
)]
pub async fn receipt_keys(State(state): State<AppState>) -> Json<ReceiptKeysView> {
    Json(public_keys(&state.key))
}
