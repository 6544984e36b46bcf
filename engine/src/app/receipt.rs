//! Signed completion receipts (ADR 32): what a completed request's log proves, signed with
//! Ed25519 under a key derived from the master key, and checked from the file alone.
//!
//! A receipt file is the compact JSON of [`Receipt`] (fields in declaration order, no white
//! space) and at most one final newline. The signature covers the compact JSON of its `receipt`
//! member. [`verify`] reads the file, writes it back in that form and requires the very same
//! bytes, so no byte of a receipt can change, white space included, and it still verify.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use lethe_domain::event::CoveredStore;
use lethe_domain::state::{CleanerState, Phase};
use lethe_domain::{CleanerName, Event, RequestId};
use serde::{Deserialize, Serialize};

use super::{LoadedRequest, MasterKey, RequestError, Requests};
use crate::store::receipt_keys::{self, ReceiptKey};

/// The receipt format written by this code.
pub const RECEIPT_VERSION: u32 = 1;

/// A signed receipt: `receipt`, the id of the key that signed it, and the signature (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub receipt: ReceiptBody,
    pub key_id: String,
    /// The Ed25519 signature of the compact JSON of `receipt`, base64.
    pub signature: String,
}

/// What a completed request's log proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub version: u32,
    #[schema(value_type = String)]
    pub request_id: RequestId,
    pub jurisdiction: String,
    pub received_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// The legal deadline, extensions included.
    pub deadline: NaiveDate,
    /// Completed on or before the deadline (UTC day).
    pub deadline_met: bool,
    /// Every planned cleaner, in name order.
    pub cleaners: Vec<ReceiptCleaner>,
    /// The declared stores covered (as on `Completed`).
    #[schema(value_type = Vec<Object>)]
    pub stores: Vec<CoveredStore>,
    /// The `Completed` event: the last event of the chain when the request completed.
    pub completed_event: ChainPoint,
}

/// One cleaner's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptCleaner {
    pub name: String,
    /// `succeeded` or `skipped`.
    pub outcome: String,
    /// Attempts whose result was recorded.
    pub attempts: u32,
    /// When it succeeded or was skipped.
    pub at: DateTime<Utc>,
    /// What the cleaner reported deleting, by kind, when it said.
    pub deleted: Option<BTreeMap<String, u64>>,
}

/// An event of the request's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainPoint {
    pub version: i64,
    pub hash: String,
}

/// A public receipt key (`GET /v1/receipt-keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptKeyView {
    pub key_id: String,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, base64.
    pub public_key: String,
}

/// The public receipt keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptKeysView {
    /// The key receipts are signed with now first, then the others held (a rotation's).
    pub keys: Vec<ReceiptKeyView>,
}

impl ReceiptKeysView {
    pub fn of(keys: &[ReceiptKey]) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|k| ReceiptKeyView {
                    key_id: k.id(),
                    algorithm: "Ed25519".to_owned(),
                    public_key: STANDARD.encode(k.public_key()),
                })
                .collect(),
        }
    }
}

impl Receipt {
    /// The file's bytes: the compact JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("not a receipt: {0}")]
    Malformed(String),
    #[error("the receipt is not byte for byte as Lethe writes it (it was altered)")]
    NotCanonical,
    #[error("signed with key {0}, which is not among the keys given")]
    UnknownKey(String),
    #[error("the signature does not match the receipt (it was altered, or signed by another key)")]
    BadSignature,
    #[error("the receipt keys: {0}")]
    Keys(String),
}

/// Checks the bytes of a receipt file against the public keys `keys`; the receipt on success.
pub fn verify(bytes: &[u8], keys: &ReceiptKeysView) -> Result<Receipt, ReceiptError> {
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let receipt: Receipt =
        serde_json::from_slice(text).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if serde_json::to_vec(&receipt).ok().as_deref() != Some(text) {
        return Err(ReceiptError::NotCanonical);
    }
    let key = keys
        .keys
        .iter()
        .find(|k| k.key_id == receipt.key_id)
        .ok_or_else(|| ReceiptError::UnknownKey(receipt.key_id.clone()))?;
    let public: [u8; 32] = STANDARD
        .decode(&key.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ReceiptError::Keys(format!("key {} is not 32 bytes of base64", key.key_id))
        })?;
    if receipt_keys::key_id(&public) != key.key_id {
        return Err(ReceiptError::Keys(format!(
            "key {} does not have that id",
            key.key_id
        )));
    }
    let signature = STANDARD
        .decode(&receipt.signature)
        .map_err(|_| ReceiptError::BadSignature)?;
    let signed = serde_json::to_vec(&receipt.receipt).unwrap_or_default();
    if !receipt_keys::verify(&public, &signed, &signature) {
        return Err(ReceiptError::BadSignature);
    }
    Ok(receipt)
}

/// Signs `body` with `key`.
pub fn sign(body: ReceiptBody, key: &ReceiptKey) -> Receipt {
    let signed = serde_json::to_vec(&body).unwrap_or_default();
    Receipt {
        receipt: body,
        key_id: key.id(),
        signature: STANDARD.encode(key.sign(&signed)),
    }
}

/// What a completed request's events prove; `None` while it is not completed.
pub fn body_of(loaded: &LoadedRequest) -> Result<Option<ReceiptBody>, RequestError> {
    let request = &loaded.request;
    let Phase::Completed {
        cleaning,
        completed_at,
    } = &request.phase
    else {
        return Ok(None);
    };
    let mut deleted: BTreeMap<(CleanerName, u32), Option<BTreeMap<String, u64>>> = BTreeMap::new();
    let mut completed = None;
    let mut stores = Vec::new();
    for recorded in &loaded.events {
        match recorded.event()? {
            Event::CleanerSucceeded(e) => {
                deleted.insert((e.cleaner, e.attempt), e.deleted);
            }
            Event::Completed(e) => {
                stores = e.stores;
                completed = Some(ChainPoint {
                    version: recorded.version,
                    hash: recorded.hash.clone(),
                });
            }
            _ => {}
        }
    }
    let Some(completed_event) = completed else {
        return Ok(None);
    };
    let cleaners = cleaning
        .cleaners
        .iter()
        .filter_map(|(name, progress)| {
            let (outcome, at, deleted) = match &progress.state {
                CleanerState::Succeeded { attempt, at } => (
                    "succeeded",
                    *at,
                    deleted.get(&(name.clone(), *attempt)).cloned().flatten(),
                ),
                CleanerState::Skipped { at, .. } => ("skipped", *at, None),
                CleanerState::Pending | CleanerState::Exhausted => return None,
            };
            Some(ReceiptCleaner {
                name: name.to_string(),
                outcome: outcome.to_owned(),
                attempts: progress.attempts,
                at,
                deleted,
            })
        })
        .collect();
    Ok(Some(ReceiptBody {
        version: RECEIPT_VERSION,
        request_id: request.id,
        jurisdiction: request.jurisdiction.to_string(),
        received_at: request.received_at,
        completed_at: *completed_at,
        deadline: request.deadline,
        deadline_met: completed_at.date_naive() <= request.deadline,
        cleaners,
        stores,
        completed_event,
    }))
}

impl Requests {
    /// The receipt of completed request `id`, signed with `key`'s receipt key.
    pub async fn receipt(&self, id: RequestId, key: &MasterKey) -> Result<Receipt, RequestError> {
        let loaded = self.load(id).await?.ok_or(RequestError::NotFound(id))?;
        let body = body_of(&loaded)?.ok_or(RequestError::NotCompleted(id))?;
        Ok(sign(body, &key.receipt_key()))
    }
}

/// The public receipt keys of `key`'s ring, the signing one first.
pub fn public_keys(key: &MasterKey) -> ReceiptKeysView {
    let signing = key.receipt_key();
    let signing_id = signing.id();
    let mut keys = vec![signing];
    keys.extend(
        key.receipt_keys()
            .into_iter()
            .filter(|k| k.id() != signing_id),
    );
    ReceiptKeysView::of(&keys)
}
