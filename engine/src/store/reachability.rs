//! Which database failures mean "the database cannot be reached now" rather than "this
//! statement or this data is wrong". The first kind is answered 503 with `Retry-After` (the
//! caller did nothing wrong and a retry is safe, see `docs/adr/0014-database-outages.md`);
//! the second is a bug or corruption, answered 500.

/// Postgres SQLSTATEs that say the server or the connection to it is going away or full,
/// not that the statement is wrong: every code of class 08 (connection exception) and of
/// class 53 (insufficient resources, e.g. 53300 too many connections), and these of class 57.
const POSTGRES_OPERATOR_CODES: [&str; 3] = [
    "57P01", // admin_shutdown: "terminating connection due to administrator command"
    "57P02", // crash_shutdown
    "57P03", // cannot_connect_now: starting up, shutting down, in recovery
];

/// SQLite's primary result codes (the low byte of an extended code) for a database another
/// connection holds locked past the busy timeout.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;

/// Whether `error` means the database is unreachable or refusing work for now.
pub(crate) fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        // Connection refused, reset or closed under a statement; no connection free (or
        // none could be opened) within the pool's acquire time-out; the pool shut down.
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(database) => {
            if let Some(pg) = database.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                postgres_code_is_unreachable(pg.code())
            } else if database
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some()
            {
                database
                    .code()
                    .and_then(|code| code.parse::<i32>().ok())
                    .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
            } else {
                false
            }
        }
        _ => false,
    }
}

fn postgres_code_is_unreachable(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || POSTGRES_OPERATOR_CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes() {
        for code in [
            "08000", "08003", "08006", "08001", "08P01", "53300", "53100",
        ] {
            assert!(postgres_code_is_unreachable(code), "{code}");
        }
        for code in POSTGRES_OPERATOR_CODES {
            assert!(postgres_code_is_unreachable(code), "{code}");
        }
        // A unique violation, bad text, a cancelled statement and a deadlock are not outages.
        for code in ["23505", "22P02", "57014", "40P01", "42P01"] {
            assert!(!postgres_code_is_unreachable(code), "{code}");
        }
    }

    #[test]
    fn transport_and_pool_failures() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_unreachable(&sqlx::Error::Io(reset)));
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(is_unreachable(&sqlx::Error::PoolClosed));
        assert!(!is_unreachable(&sqlx::Error::RowNotFound));
        assert!(!is_unreachable(&sqlx::Error::Protocol(
            "bad message".into()
        )));
    }
}
