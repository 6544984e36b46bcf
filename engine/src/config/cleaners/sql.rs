//! `kind = "sql"`: Lethe runs statements against a database itself (docs/CLEANERS.md).
//!
//! What can be checked without the SQL lexer is checked here, naming the key; the statements
//! are converted (and refused, naming `statements[j]`) when the cleaner is built.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::validate::invalid;
use crate::config::{ConfigError, SecretSource};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCleanerConfig {
    /// The database, without its password: `postgres://`, `mysql://`, `mariadb://`, `sqlite:`.
    pub url: String,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The file holding the password.
    pub password_file: Option<PathBuf>,
    /// The pool's bound.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Run in order, in one transaction, with `:name` bound from the subject's identifiers.
    pub statements: Vec<String>,
    /// `SELECT count(*)` queries run after the statements, in the same transaction: each must
    /// count 0, or the attempt fails and its transaction is rolled back.
    #[serde(default)]
    pub verify: Vec<String>,
}

fn default_max_connections() -> u32 {
    2
}

const SCHEMES: [&str; 5] = ["postgres", "postgresql", "mysql", "mariadb", "sqlite"];

impl SqlCleanerConfig {
    /// Where the password is.
    pub fn password(&self) -> SecretSource {
        SecretSource::new(self.password_env.as_deref(), self.password_file.as_deref())
    }

    /// Checks the settings; `key` names a field of this cleaner (`cleaners[2].url`).
    pub(super) fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let scheme = self
            .url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        let Some(scheme) = scheme.filter(|s| SCHEMES.contains(&s.as_str())) else {
            return Err(invalid(
                key("url"),
                "must start with postgres://, postgresql://, mysql://, mariadb:// or sqlite:",
            ));
        };
        if has_inline_password(&self.url) {
            return Err(invalid(
                key("url"),
                "carries a password: leave it out and set password_env or password_file",
            ));
        }
        if scheme == "sqlite" && self.password().is_set() {
            return Err(invalid(
                key("password_env"),
                "a SQLite database has no password",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(key("max_connections"), "must be at least 1"));
        }
        if self.statements.is_empty() {
            return Err(invalid(
                key("statements"),
                "must hold at least one statement",
            ));
        }
        for (j, statement) in self.statements.iter().enumerate() {
            if !mentions_parameter(statement) {
                return Err(invalid(
                    key(&format!("statements[{j}]")),
                    "has no :parameter: it would erase every subject's rows, not one subject's \
                     (write e.g. `WHERE user_id = :user_id`)",
                ));
            }
        }
        for (j, query) in self.verify.iter().enumerate() {
            if !mentions_parameter(query) {
                return Err(invalid(
                    key(&format!("verify[{j}]")),
                    "has no :parameter: it would count every subject's rows",
                ));
            }
        }
        Ok(())
    }
}

/// Whether the authority of `url` has `user:password@`.
fn has_inline_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Whether `text` has a `:` followed by a letter that is not part of `::` (a rough look: the
/// lexer that knows literals and comments runs when the cleaner is built).
fn mentions_parameter(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        bytes[i] == b':'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
            && (i == 0 || bytes[i - 1] != b':')
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn sql_cleaner(settings: &str) -> String {
        format!("[[cleaners]]\nname = \"db\"\nkind = \"sql\"\n{settings}\n")
    }

    #[test]
    fn the_documented_settings_parse() {
        let config = Config::parse(&sql_cleaner(
            r#"url = "postgres://lethe@db.internal:5432/app"
            password_env = "APP_DB_PASSWORD"
            statements = ["DELETE FROM users WHERE email = :email OR id = :user_id"]
            verify = ["SELECT count(*) FROM users WHERE email = :email"]"#,
        ))
        .unwrap();
        let crate::config::CleanerKind::Sql(sql) = &config.cleaners[0].kind else {
            panic!("not sql");
        };
        assert_eq!(sql.max_connections, 2);
        assert_eq!(sql.password().env.as_deref(), Some("APP_DB_PASSWORD"));
        assert_eq!(sql.verify.len(), 1);
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let good = r#"statements = ["DELETE FROM t WHERE id = :user_id"]"#;
        let cases = [
            (format!("url = \"mssql://h/db\"\n{good}"), "cleaners[0].url"),
            (
                format!("url = \"postgres://u:pw@h/db\"\n{good}"),
                "password_env or password_file",
            ),
            (
                format!("url = \"sqlite:a.db\"\npassword_env = \"X\"\n{good}"),
                "cleaners[0].password_env",
            ),
            (
                format!("url = \"sqlite:a.db\"\nmax_connections = 0\n{good}"),
                "cleaners[0].max_connections",
            ),
            (
                "url = \"sqlite:a.db\"\nstatements = []".to_owned(),
                "cleaners[0].statements",
            ),
            (
                "url = \"sqlite:a.db\"\nstatements = [\"DELETE FROM t WHERE id = :user_id\", \
                 \"DELETE FROM t WHERE x::int = 1\"]"
                    .to_owned(),
                "cleaners[0].statements[1]: has no :parameter",
            ),
            (
                format!("url = \"sqlite:a.db\"\n{good}\nverify = [\"SELECT count(*) FROM t\"]"),
                "cleaners[0].verify[0]",
            ),
            (
                "url = \"sqlite:a.db\"".to_owned(),
                "missing field `statements`",
            ),
        ];
        for (settings, wanted) in cases {
            let message = Config::parse(&sql_cleaner(&settings))
                .unwrap_err()
                .to_string();
            assert!(message.contains(wanted), "{settings:?} gave {message:?}");
        }
        assert!(Config::parse(&sql_cleaner(&format!(
            "url = \"mysql://lethe@h:3306/app\"\n{good}"
        )))
        .is_ok());
    }
}
