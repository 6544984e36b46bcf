//! Named parameters in the SQL of a cleaner's settings: `:user_id` becomes the backend's
//! placeholder (`$1` on Postgres, `?` on MySQL/MariaDB and SQLite) and the subject's identifier
//! is bound to it, never spliced into the text.
//!
//! The converter is a small lexer that knows where a `:` is not a parameter: inside string
//! literals (`'...'`, Postgres `E'...'` and `$tag$...$tag$`, MySQL `"..."`), quoted identifiers
//! (`"..."`, `` `...` ``, SQLite `[...]`), comments (`-- `, `/* */`, MySQL `#`), and Postgres
//! `::` casts. Should it misread a statement, the worst outcome is a statement the server
//! refuses: the identifiers' values never enter the text.
//!
//! Positional placeholders (`$1`, `?`) written in a statement are refused: a value would have
//! nothing to be bound from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[cfg(test)]
mod tests;

/// The database a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    /// MySQL and MariaDB.
    MySql,
    Sqlite,
}

impl Backend {
    /// The URL schemes Lethe knows, as a sentence for error messages.
    pub const SCHEMES: &'static str = "postgres://, postgresql://, mysql://, mariadb:// or sqlite:";

    /// The backend of a database URL, by its scheme; `None` for another scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once(':')?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Some(Self::Postgres),
            "mysql" | "mariadb" => Some(Self::MySql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A statement that cannot be converted. Positions are byte offsets into the statement as
/// written (statements come from the settings, never from a subject).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("unterminated {what} starting at byte {at}")]
    Unterminated { what: &'static str, at: usize },
    #[error(
        "positional placeholder `{placeholder}` at byte {at}: name the identifier instead \
         (`:user_id`)"
    )]
    Positional { placeholder: String, at: usize },
}

/// A statement with `:name` parameters, converted for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedQuery {
    /// As written in the settings.
    text: String,
    /// With the backend's placeholders.
    sql: String,
    /// The parameter bound to each placeholder, in order: one per distinct name on Postgres
    /// (`$n` can be repeated), one per occurrence on the others.
    binds: Vec<String>,
}

/// The identifiers a statement needs and the subject lacks (distinct, sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingIdentifiers(pub Vec<String>);

impl fmt::Display for MissingIdentifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {}", self.0.join(", no "))
    }
}

impl NamedQuery {
    /// Converts `text` for `backend`.
    pub fn parse(text: &str, backend: Backend) -> Result<Self, ParamError> {
        let (sql, binds) = Lexer::new(text, backend).convert()?;
        Ok(Self {
            text: text.to_owned(),
            sql,
            binds,
        })
    }

    /// The statement as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The statement with the backend's placeholders.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The parameter of each placeholder, in the order they are bound.
    pub fn binds(&self) -> &[String] {
        &self.binds
    }

    /// The distinct parameter names.
    pub fn names(&self) -> BTreeSet<&str> {
        self.binds.iter().map(String::as_str).collect()
    }

    /// The values to bind, in order, taken from `subject`; the names it lacks otherwise.
    pub fn values<'s>(
        &self,
        subject: &'s BTreeMap<String, String>,
    ) -> Result<Vec<&'s str>, MissingIdentifiers> {
        let mut missing = BTreeSet::new();
        let mut values = Vec::with_capacity(self.binds.len());
        for name in &self.binds {
            match subject.get(name) {
                Some(value) => values.push(value.as_str()),
                None => {
                    missing.insert(name.clone());
                }
            }
        }
        if missing.is_empty() {
            Ok(values)
        } else {
            Err(MissingIdentifiers(missing.into_iter().collect()))
        }
    }
}

struct Lexer<'t> {
    text: &'t str,
    bytes: &'t [u8],
    backend: Backend,
    /// The next byte to look at.
    at: usize,
    /// The text before `copied` is in `sql` already.
    copied: usize,
    sql: String,
    binds: Vec<String>,
}

impl<'t> Lexer<'t> {
    fn new(text: &'t str, backend: Backend) -> Self {
        Self {
            text,
            bytes: text.as_bytes(),
            backend,
            at: 0,
            copied: 0,
            sql: String::with_capacity(text.len() + 8),
            binds: Vec::new(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.at + ahead).copied()
    }

    /// Scans the whole text. Every token that may hold a `:` is skipped whole; only bytes
    /// that are ASCII matter, and UTF-8 never puts an ASCII byte inside a wider character.
    fn convert(mut self) -> Result<(String, Vec<String>), ParamError> {
        use Backend::{MySql, Postgres, Sqlite};
        while let Some(c) = self.peek(0) {
            let next = self.peek(1);
            match c {
                b'\'' => {
                    let backslash = self.backend == MySql || self.escape_string_prefix();
                    self.skip_quoted(b'\'', backslash, "string literal")?;
                }
                b'"' if self.backend == MySql => self.skip_quoted(b'"', true, "string literal")?,
                b'"' => self.skip_quoted(b'"', false, "quoted identifier")?,
                b'`' if self.backend != Postgres => {
                    self.skip_quoted(b'`', false, "quoted identifier")?;
                }
                b'[' if self.backend == Sqlite => self.skip_until(1, b"]", "quoted identifier")?,
                b'-' if next == Some(b'-') && self.line_comment_dashes() => {
                    self.skip_line();
                }
                b'#' if self.backend == MySql => self.skip_line(),
                b'/' if next == Some(b'*') => self.skip_block_comment()?,
                b'$' if self.backend == Postgres => self.dollar()?,
                b'?' if self.backend != Postgres => {
                    let end = self.at + 1 + self.digits_from(self.at + 1);
                    return Err(ParamError::Positional {
                        placeholder: self.text[self.at..end].to_owned(),
                        at: self.at,
                    });
                }
                b':' if next == Some(b':') => self.at += 2,
                b':' if next.is_some_and(is_name_start) => self.parameter(),
                _ => self.at += 1,
            }
        }
        self.sql.push_str(&self.text[self.copied..]);
        Ok((self.sql, self.binds))
    }

    /// Whether the `'` at `at` opens a Postgres `E'...'` string (backslash escapes).
    fn escape_string_prefix(&self) -> bool {
        self.backend == Backend::Postgres
            && self.at >= 1
            && matches!(self.bytes[self.at - 1], b'e' | b'E')
            && (self.at < 2 || !is_name_byte(self.bytes[self.at - 2]))
    }

    /// Whether `--` at `at` starts a comment: MySQL wants a space or control character after it.
    fn line_comment_dashes(&self) -> bool {
        self.backend != Backend::MySql || self.peek(2).is_none_or(|c| c <= b' ')
    }

    /// Skips `quote ... quote`, where a doubled quote (and, with `backslash`, `\` and any
    /// byte) stands for itself.
    fn skip_quoted(
        &mut self,
        quote: u8,
        backslash: bool,
        what: &'static str,
    ) -> Result<(), ParamError> {
        let start = self.at;
        let mut i = start + 1;
        while i < self.bytes.len() {
            let c = self.bytes[i];
            if backslash && c == b'\\' {
                i += 2;
            } else if c == quote {
                if self.bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    self.at = i + 1;
                    return Ok(());
                }
            } else {
                i += 1;
            }
        }
        Err(ParamError::Unterminated { what, at: start })
    }

    /// Skips from `at` past the first `end` found after `opener` bytes.
    fn skip_until(
        &mut self,
        opener: usize,
        end: &[u8],
        what: &'static str,
    ) -> Result<(), ParamError> {
        let from = self.at + opener;
        match find(&self.bytes[from.min(self.bytes.len())..], end) {
            Some(offset) => {
                self.at = from + offset + end.len();
                Ok(())
            }
            None => Err(ParamError::Unterminated { what, at: self.at }),
        }
    }

    fn skip_line(&mut self) {
        match find(&self.bytes[self.at..], b"\n") {
            Some(offset) => self.at += offset + 1,
            None => self.at = self.bytes.len(),
        }
    }

    /// `/* ... */`, nested on Postgres.
    fn skip_block_comment(&mut self) -> Result<(), ParamError> {
        let start = self.at;
        let nests = self.backend == Backend::Postgres;
        let mut depth = 0usize;
        let mut i = start;
        while i + 1 < self.bytes.len() {
            match (self.bytes[i], self.bytes[i + 1]) {
                (b'/', b'*') if depth == 0 || nests => {
                    depth += 1;
                    i += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        self.at = i;
                        return Ok(());
                    }
                }
                _ => i += 1,
            }
        }
        Err(ParamError::Unterminated {
            what: "block comment",
            at: start,
        })
    }

    /// A Postgres `$`: a positional `$1` (refused), a `$tag$...$tag$` string, or part of a
    /// name (`price$usd`).
    fn dollar(&mut self) -> Result<(), ParamError> {
        if self.at > 0 && is_name_byte(self.bytes[self.at - 1]) {
            self.at += 1;
            return Ok(());
        }
        let digits = self.digits_from(self.at + 1);
        if digits > 0 {
            return Err(ParamError::Positional {
                placeholder: self.text[self.at..self.at + 1 + digits].to_owned(),
                at: self.at,
            });
        }
        let tag_len = match self.peek(1) {
            Some(c) if is_name_start(c) => {
                1 + self.bytes[self.at + 2..]
                    .iter()
                    .take_while(|c| is_word_byte(**c))
                    .count()
            }
            _ => 0,
        };
        if self.bytes.get(self.at + 1 + tag_len) != Some(&b'$') {
            self.at += 1;
            return Ok(());
        }
        let tag = self.bytes[self.at..self.at + tag_len + 2].to_vec();
        self.skip_until(tag.len(), &tag, "dollar-quoted string")
    }

    /// `:name` at `at`: replaced by the backend's placeholder.
    fn parameter(&mut self) {
        let start = self.at;
        let len = self.bytes[start + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        let name = &self.text[start + 1..start + 1 + len];
        self.sql.push_str(&self.text[self.copied..start]);
        match self.backend {
            Backend::Postgres => {
                let index = match self.binds.iter().position(|b| b == name) {
                    Some(index) => index,
                    None => {
                        self.binds.push(name.to_owned());
                        self.binds.len() - 1
                    }
                };
                self.sql.push('$');
                self.sql.push_str(&(index + 1).to_string());
            }
            Backend::MySql | Backend::Sqlite => {
                self.binds.push(name.to_owned());
                self.sql.push('?');
            }
        }
        self.at = start + 1 + len;
        self.copied = self.at;
    }

    fn digits_from(&self, from: usize) -> usize {
        self.bytes.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|c| c.is_ascii_digit()).count()
        })
    }
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

/// A byte of an unquoted name or of a dollar-quote tag.
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// A byte of an unquoted Postgres name, which may hold `$`.
fn is_name_byte(c: u8) -> bool {
    is_word_byte(c) || c == b'$'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
