//! What a failed call to the store means for the attempt: network trouble, a 5xx, throttling
//! (429, `SlowDown`) and time-outs may pass and are retried; 403, a missing bucket and other
//! 4xx answers are not. The store's own error texts name the object (its key holds the
//! subject's identifiers), so they are never copied: the message is made here, from the kind
//! of failure and the HTTP status alone.

use object_store::client::HttpError;

/// A failed call, described without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    pub message: String,
    pub status: Option<u16>,
    pub retryable: bool,
}

impl StoreFailure {
    /// `error`, for a call described by `what` ("listing prefixes[0]").
    pub fn of(what: &str, error: &object_store::Error) -> Self {
        use object_store::Error as E;
        let (status, network, delete_code) = inspect(error);
        if let Some(code) = delete_code {
            let retryable = matches!(
                code.as_str(),
                "InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout"
            );
            return Self {
                message: format!("{what}: the store refused the delete ({code})"),
                status: None,
                retryable,
            };
        }
        if let Some(kind) = network {
            return Self {
                message: format!("{what}: the store could not be reached ({kind})"),
                status: None,
                retryable: true,
            };
        }
        let status = status.or(match error {
            E::PermissionDenied { .. } => Some(403),
            E::Unauthenticated { .. } => Some(401),
            E::NotFound { .. } => Some(404),
            _ => None,
        });
        match status {
            Some(code) => Self {
                message: format!("{what}: {}", status_meaning(code)),
                status: Some(code),
                retryable: code >= 500 || code == 429 || code == 408,
            },
            None => Self {
                message: format!("{what}: the store's answer could not be used"),
                status: None,
                retryable: !matches!(
                    error,
                    E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented
                ),
            },
        }
    }
}

fn status_meaning(code: u16) -> String {
    match code {
        401 | 403 => format!("the store refused the credentials (HTTP {code})"),
        404 => "the bucket does not exist (HTTP 404)".to_owned(),
        429 => "the store is throttling (HTTP 429)".to_owned(),
        500..=599 => format!("the store failed (HTTP {code})"),
        _ => format!("the store refused the call (HTTP {code})"),
    }
}

/// The HTTP status, the kind of network failure and the code of a refused delete found in
/// `error`'s chain. object_store keeps the status in a private type: its message
/// (`Server returned non-2xx status code: 503 Service Unavailable: …`) is the one place it shows.
fn inspect(error: &object_store::Error) -> (Option<u16>, Option<String>, Option<String>) {
    let mut status = None;
    let mut network = None;
    let mut delete_code = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            network.get_or_insert_with(|| format!("{:?}", http.kind()).to_lowercase());
        }
        // object_store's HttpError is transparent in the chain: its cause, reqwest's, shows.
        if let Some(http) = current.downcast_ref::<reqwest::Error>() {
            let kind = if http.is_timeout() {
                "timeout"
            } else if http.is_connect() {
                "connect"
            } else {
                "request"
            };
            network.get_or_insert_with(|| kind.to_owned());
        }
        let text = current.to_string();
        if let Some(rest) = text.strip_prefix("Server returned non-2xx status code: ") {
            status = status.or_else(|| rest.get(..3).and_then(|code| code.parse().ok()));
        }
        if text.starts_with("DeleteObjects request failed for key") {
            delete_code = text
                .rsplit_once("(code: ")
                .and_then(|(_, code)| code.strip_suffix(')'))
                .map(|code| {
                    code.chars()
                        .filter(char::is_ascii_alphanumeric)
                        .take(64)
                        .collect()
                });
        }
        next = current.source();
    }
    (status, network, delete_code)
}
