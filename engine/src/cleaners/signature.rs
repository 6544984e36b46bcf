//! The `Lethe-Signature` header: how a cleaner (or the reminder notifier) knows that a call
//! comes from Lethe and was not replayed later.
//!
//! The value is `t={unix_seconds},v1={hex}` where `hex` is HMAC-SHA256 under the cleaner's
//! shared secret of the bytes `"{t}."` followed by the exact request body. Binding the
//! timestamp into the MAC lets the receiver reject old captures with a tolerance window, and
//! signing the raw bytes (not a re-serialisation) means any JSON library can verify it.
//! [`verify`] accepts several `v1=` parts so that a secret can be rotated: during the switch a
//! sender can sign with both keys and receivers accept either.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the header that carries the signature.
pub const HEADER: &str = "Lethe-Signature";

/// The tolerance receivers should use between the signed timestamp and their clock.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<integer>,v1=<hex>[,v1=<hex>...]`.
    #[error("malformed {HEADER} header: {0}")]
    Malformed(&'static str),
    /// The signature is genuine but its timestamp is too far from the receiver's clock: a replay
    /// or a clock that is off.
    #[error("{HEADER} timestamp is {age_seconds}s away from now (tolerance {tolerance_seconds}s)")]
    Expired {
        age_seconds: i64,
        tolerance_seconds: i64,
    },
    /// No `v1` signature matches the body under this secret.
    #[error("{HEADER} does not match the body")]
    Mismatch,
}

/// The MAC of `"{timestamp}.{body}"` under `secret`, ready to be finalised or verified.
fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// The parts of a header value: the timestamp and every `v1` signature, decoded.
#[derive(Debug)]
struct Parsed {
    timestamp: i64,
    signatures: Vec<Vec<u8>>,
}

fn parse(header: &str) -> Result<Parsed, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once('=')
            .ok_or(SignatureError::Malformed("a part is not key=value"))?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t= part"));
                }
                let value = value.trim();
                // `i64::from_str` would accept a leading '+'; the sender never writes one.
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SignatureError::Malformed("t= is not Unix seconds"));
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t= is not Unix seconds"))?,
                );
            }
            "v1" => {
                let decoded = hex::decode(value.trim())
                    .map_err(|_| SignatureError::Malformed("v1= is not hex"))?;
                signatures.push(decoded);
            }
            // Other schemes (a future `v2`) are skipped so that senders can add them first.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= part"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1= part"));
    }
    Ok(Parsed {
        timestamp,
        signatures,
    })
}

/// Checks a `Lethe-Signature` header against `body` under `secret` at `now` (Unix seconds).
///
/// Succeeds when any `v1` signature matches (compared in constant time) and the signed
/// timestamp is at most `tolerance_seconds` away from `now`, in either direction. The
/// signature is checked before the age, so [`SignatureError::Expired`] only ever describes a
/// genuine but stale call.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_seconds: i64,
) -> Result<(), SignatureError> {
    let parsed = parse(header)?;
    let expected = mac(secret, parsed.timestamp, body);
    let genuine = parsed
        .signatures
        .iter()
        .any(|candidate| expected.clone().verify_slice(candidate).is_ok());
    if !genuine {
        return Err(SignatureError::Mismatch);
    }
    let age_seconds = now.saturating_sub(parsed.timestamp);
    if age_seconds.saturating_abs() > tolerance_seconds {
        return Err(SignatureError::Expired {
            age_seconds,
            tolerance_seconds,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"s3cret";
    const BODY: &[u8] = br#"{"request_id":"0190e1a2-0000-7000-8000-000000000001"}"#;
    const T: i64 = 1_700_000_000;

    /// The expected MAC computed the long way, straight from `hmac` and `sha2` rather than
    /// through the module's helper, so that a mistake in what is signed (order, separator,
    /// algorithm) shows up.
    fn independent_hex(secret: &[u8], message: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn sign_matches_an_independently_computed_hmac_of_t_dot_body() {
        let mut message = b"1700000000.".to_vec();
        message.extend_from_slice(BODY);
        let expected = format!("t=1700000000,v1={}", independent_hex(SECRET, &message));
        assert_eq!(sign(SECRET, T, BODY), expected);
    }

    #[test]
    fn sign_matches_the_vector_in_docs_cleaners_md() {
        // Computed with Python's hmac/hashlib; docs/CLEANERS.md quotes the same vector so
        // that cleaner authors can check their own verifier.
        assert_eq!(
            sign(SECRET, T, BODY),
            "t=1700000000,v1=6225cd26d1d537a4c923a988c2f23d067da06f9aa0a2298c98864e85e2731ff4"
        );
    }

    #[test]
    fn a_fresh_signature_verifies() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(SECRET, &header, BODY, T, 300), Ok(()));
        assert_eq!(verify(SECRET, &header, BODY, T + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, &header, BODY, T - 300, 300), Ok(()));
    }

    #[test]
    fn another_secret_or_body_is_a_mismatch() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(
            verify(b"other", &header, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &header, b"{}", T, 300),
            Err(SignatureError::Mismatch)
        );
        // Moving the timestamp breaks the MAC too: it is part of what is signed.
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(SECRET, &moved, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_expire() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(
            verify(SECRET, &header, BODY, T + 301, 300),
            Err(SignatureError::Expired {
                age_seconds: 301,
                tolerance_seconds: 300
            })
        );
        assert_eq!(
            verify(SECRET, &header, BODY, T - 301, 300),
            Err(SignatureError::Expired {
                age_seconds: -301,
                tolerance_seconds: 300
            })
        );
        // Extreme clocks neither overflow nor pass.
        assert!(matches!(
            verify(SECRET, &header, BODY, i64::MIN, 300),
            Err(SignatureError::Expired { .. })
        ));
    }

    #[test]
    fn parts_may_come_in_any_order_with_spaces_and_several_v1() {
        let good = sign(SECRET, T, BODY);
        let v1 = good.split_once(",v1=").unwrap().1;
        let old_key = sign(b"retired", T, BODY);
        let old_v1 = old_key.split_once(",v1=").unwrap().1;
        for header in [
            format!("v1={v1},t={T}"),
            format!(" t={T} , v1={v1} "),
            format!("t={T},v1={old_v1},v1={v1}"),
            format!("t={T},v1={v1},v0=ignored"),
            format!("t={T},v1={}", v1.to_uppercase()),
        ] {
            assert_eq!(verify(SECRET, &header, BODY, T, 300), Ok(()), "{header}");
        }
        // Only the retired key's signature: not accepted.
        assert_eq!(
            verify(SECRET, &old_key, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused_before_any_mac() {
        let v1 = "00".repeat(32);
        for header in [
            String::new(),
            format!("v1={v1}"),
            format!("t={T}"),
            format!("t={T},v1=zz"),
            format!("t=soon,v1={v1}"),
            format!("t=+{T},v1={v1}"),
            format!("t=-5,v1={v1}"),
            format!("t=99999999999999999999,v1={v1}"),
            format!("t={T},t={T},v1={v1}"),
            format!("t={T},v1"),
            format!("sha256={v1}"),
        ] {
            assert!(
                matches!(
                    verify(SECRET, &header, BODY, T, 300),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_truncated_signature_does_not_match() {
        let header = sign(SECRET, T, BODY);
        let truncated = &header[..header.len() - 2];
        assert_eq!(
            verify(SECRET, truncated, BODY, T, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
