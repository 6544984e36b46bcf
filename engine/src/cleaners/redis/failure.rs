//! What a Redis error means for an attempt: whether another attempt may succeed, and a text
//! that says what happened without the subject. Keys hold identifiers and some server errors
//! quote their arguments (`ERR unknown command 'UNLINK', with args beginning with: 'user:42'`),
//! so no text of the server's is kept but its error code.

use ::redis::{ErrorKind, RedisError};

/// Server error codes that end by themselves: a server loading its data set, a script
/// running, a failover, a write refused while a snapshot fails.
const PASSING: [&str; 7] = [
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "MISCONF",
];

/// Whether another attempt may succeed: the server unreachable, slow or busy for a while.
pub(super) fn is_retryable(error: &RedisError) -> bool {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
    {
        return true;
    }
    error.code().is_some_and(|code| PASSING.contains(&code))
}

/// The connection refused, reset or closed (not a timeout): a reconnection may mend it at once.
pub(super) fn is_broken_connection(error: &RedisError) -> bool {
    !error.is_timeout()
        && (error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped())
}

/// What happened, in words that carry no key, field or value.
pub(super) fn describe(error: &RedisError) -> String {
    if error.is_timeout() {
        return "the Redis server did not answer within the cleaner's timeout".to_owned();
    }
    if error.is_connection_refusal() {
        return "the Redis server refused the connection".to_owned();
    }
    if error.is_connection_dropped() {
        return "the connection to the Redis server was lost".to_owned();
    }
    if error.kind() == ErrorKind::Io {
        let io = std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>());
        return match io {
            Some(io) => format!("cannot talk to the Redis server: {}", io.kind()),
            None => "the connection to the Redis server failed".to_owned(),
        };
    }
    if error.kind() == ErrorKind::AuthenticationFailed {
        return "Redis refused the password (password_env or password_file)".to_owned();
    }
    match error.code() {
        Some(code) => match code {
            "WRONGTYPE" => "Redis answered WRONGTYPE: the key holds another type than the \
                            command works on (a hash_fields key that is not a hash?)"
                .to_owned(),
            "NOAUTH" => "Redis answered NOAUTH: the server needs a password (password_env or \
                         password_file)"
                .to_owned(),
            "WRONGPASS" => "Redis answered WRONGPASS: the user or password is wrong".to_owned(),
            "NOPERM" => "Redis answered NOPERM: the user may not run UNLINK, SCAN, HDEL, \
                         EXISTS or HEXISTS on these keys"
                .to_owned(),
            "LOADING" => "Redis answered LOADING: the server is loading its data".to_owned(),
            "BUSY" => "Redis answered BUSY: the server is running a script".to_owned(),
            code if code.chars().all(|c| c.is_ascii_uppercase()) => {
                format!("Redis answered {code}")
            }
            _ => "Redis answered an error".to_owned(),
        },
        None => format!("Redis client error ({:?})", error.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_retryable_and_described_without_detail() {
        let refused: RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "user:42").into();
        assert!(is_retryable(&refused));
        assert!(!describe(&refused).contains("42"), "{}", describe(&refused));
        let timeout: RedisError =
            std::io::Error::new(std::io::ErrorKind::TimedOut, "user:42").into();
        assert!(is_retryable(&timeout));
        assert!(describe(&timeout).contains("timeout"));
    }

    #[test]
    fn client_errors_are_final() {
        let auth: RedisError = (ErrorKind::AuthenticationFailed, "user:42").into();
        assert!(!is_retryable(&auth));
        assert!(!describe(&auth).contains("42"));
    }
}
