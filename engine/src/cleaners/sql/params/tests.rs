use proptest::prelude::*;

use super::*;

const ALL: [Backend; 3] = [Backend::Postgres, Backend::MySql, Backend::Sqlite];

fn convert(text: &str, backend: Backend) -> (String, Vec<String>) {
    let query = NamedQuery::parse(text, backend).unwrap();
    (query.sql().to_owned(), query.binds().to_vec())
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn parameters_become_the_backends_placeholders() {
    let text = "DELETE FROM users WHERE email = :email OR id = :user_id OR alt = :email";
    assert_eq!(
        convert(text, Backend::Postgres),
        (
            "DELETE FROM users WHERE email = $1 OR id = $2 OR alt = $1".to_owned(),
            strings(&["email", "user_id"])
        )
    );
    for backend in [Backend::MySql, Backend::Sqlite] {
        assert_eq!(
            convert(text, backend),
            (
                "DELETE FROM users WHERE email = ? OR id = ? OR alt = ?".to_owned(),
                strings(&["email", "user_id", "email"])
            )
        );
    }
}

#[test]
fn postgres_casts_are_not_parameters() {
    assert_eq!(
        convert(
            "DELETE FROM t WHERE id = :user_id::bigint AND x::text = 'a'",
            Backend::Postgres
        ),
        (
            "DELETE FROM t WHERE id = $1::bigint AND x::text = 'a'".to_owned(),
            strings(&["user_id"])
        )
    );
}

#[test]
fn string_literals_quoted_identifiers_and_comments_keep_their_colons() {
    let cases: &[(Backend, &str)] = &[
        (
            Backend::Postgres,
            "SELECT ':a', 'it''s :b', \"col:c\" -- :d\n",
        ),
        (
            Backend::Postgres,
            "SELECT E'\\' :a', $$ :b $$, $t$ :c $ $t$ /* :d /* :e */ :f */",
        ),
        (
            Backend::MySql,
            "SELECT ':a', 'it\\' :b', \":c\", `:d` # :e\n-- :f\n/* :g */",
        ),
        (
            Backend::Sqlite,
            "SELECT ':a', \"x:b\", `:c`, [:d] -- :e\n/* :f */",
        ),
    ];
    for (backend, text) in cases {
        let query = NamedQuery::parse(&format!("{text} WHERE id = :user_id"), *backend).unwrap();
        assert_eq!(query.binds(), ["user_id"], "{backend} {text:?}");
        assert!(query.sql().starts_with(text), "{backend} {text:?}");
    }
}

#[test]
fn the_quirks_of_each_dialect() {
    // Outside E'', a Postgres backslash is an ordinary character.
    assert_eq!(
        convert("SELECT '\\' , :a", Backend::Postgres).1,
        strings(&["a"])
    );
    // `--1` is not a comment in MySQL; `:=` is an assignment.
    assert_eq!(
        convert("SELECT 1--1, :a, @x := 2", Backend::MySql),
        ("SELECT 1--1, ?, @x := 2".to_owned(), strings(&["a"]))
    );
    // A `$` inside a Postgres name is not a dollar quote.
    assert_eq!(
        convert("SELECT price$usd, :a FROM t$x", Backend::Postgres).1,
        strings(&["a"])
    );
    // Postgres block comments nest, the others' do not.
    assert_eq!(
        convert("/* /* */ :a */ :b", Backend::Postgres).1,
        strings(&["b"])
    );
    assert_eq!(
        convert("/* /* */ :a /* */ :b", Backend::Sqlite).1,
        strings(&["a", "b"])
    );
    // Multi-byte text around parameters survives whole.
    assert_eq!(
        convert("SELECT 'é:x', ü, :naïve", Backend::Sqlite),
        ("SELECT 'é:x', ü, ?ïve".to_owned(), strings(&["na"]))
    );
}

#[test]
fn positional_placeholders_and_unterminated_tokens_are_refused() {
    let refused: &[(Backend, &str, &str)] = &[
        (Backend::Postgres, "DELETE FROM t WHERE id = $1", "`$1`"),
        (Backend::MySql, "DELETE FROM t WHERE id = ?", "`?`"),
        (Backend::Sqlite, "DELETE FROM t WHERE id = ?12", "`?12`"),
        (
            Backend::Postgres,
            "SELECT 'abc",
            "unterminated string literal",
        ),
        (
            Backend::MySql,
            "SELECT 'abc\\'",
            "unterminated string literal",
        ),
        (
            Backend::Sqlite,
            "SELECT \"abc",
            "unterminated quoted identifier",
        ),
        (
            Backend::Sqlite,
            "SELECT [abc",
            "unterminated quoted identifier",
        ),
        (
            Backend::Postgres,
            "SELECT $x$ abc $y$",
            "unterminated dollar-quoted",
        ),
        (Backend::Postgres, "/* /* */", "unterminated block comment"),
    ];
    for (backend, text, wanted) in refused {
        let message = NamedQuery::parse(text, *backend).unwrap_err().to_string();
        assert!(message.contains(wanted), "{backend} {text:?}: {message}");
    }
    // A `?` is a Postgres (jsonb) operator, not a placeholder.
    assert!(NamedQuery::parse("SELECT d ? 'k' FROM t WHERE id = :a", Backend::Postgres).is_ok());
}

#[test]
fn values_come_from_the_subject_and_missing_ones_are_named() {
    let query = NamedQuery::parse(
        "DELETE FROM t WHERE a = :email OR b = :user_id OR c = :phone",
        Backend::MySql,
    )
    .unwrap();
    let subject = BTreeMap::from([
        ("email".to_owned(), "a@example.com".to_owned()),
        ("user_id".to_owned(), "42".to_owned()),
    ]);
    let missing = query.values(&subject).unwrap_err();
    assert_eq!(missing.to_string(), "no phone");
    let full = BTreeMap::from([
        ("email".to_owned(), "a@example.com".to_owned()),
        ("user_id".to_owned(), "42".to_owned()),
        ("phone".to_owned(), "+1".to_owned()),
    ]);
    assert_eq!(query.values(&full).unwrap(), ["a@example.com", "42", "+1"]);
    assert_eq!(
        query.names().into_iter().collect::<Vec<_>>(),
        ["email", "phone", "user_id"]
    );
}

#[test]
fn backends_are_known_by_their_url_scheme() {
    assert_eq!(Backend::of_url("postgres://h/db"), Some(Backend::Postgres));
    assert_eq!(
        Backend::of_url("PostgreSQL://h/db"),
        Some(Backend::Postgres)
    );
    assert_eq!(Backend::of_url("mariadb://h/db"), Some(Backend::MySql));
    assert_eq!(Backend::of_url("mysql://h/db"), Some(Backend::MySql));
    assert_eq!(Backend::of_url("sqlite://a.db"), Some(Backend::Sqlite));
    assert_eq!(Backend::of_url("sqlite:a.db"), Some(Backend::Sqlite));
    assert_eq!(Backend::of_url("mssql://h/db"), None);
    assert_eq!(Backend::of_url("no scheme"), None);
}

/// A piece of a generated statement.
#[derive(Debug, Clone)]
enum Piece {
    Word(String),
    Parameter(String),
    /// A string literal with arbitrary content (quotes doubled).
    Literal(String),
    Comment(String),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        "[a-z0-9 =(),.*<>]{1,12}".prop_map(Piece::Word),
        "[a-z][a-z0-9_]{0,8}".prop_map(Piece::Parameter),
        any::<String>().prop_map(Piece::Literal),
        "[^\n]{0,20}".prop_map(Piece::Comment),
    ]
}

fn render(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Word(w) => format!(" {w} "),
            Piece::Parameter(p) => format!(" :{p} "),
            // No backslash in the content: MySQL would read it as an escape.
            Piece::Literal(l) => format!(" '{}' ", l.replace('\\', "").replace('\'', "''")),
            Piece::Comment(c) => format!(" -- {c}\n"),
        })
        .collect()
}

proptest! {
    /// Any bytes: the converter answers (an error or a statement), and never panics.
    #[test]
    fn any_text_is_converted_or_refused(text in any::<String>()) {
        for backend in ALL {
            let _ = NamedQuery::parse(&text, backend);
        }
    }

    /// Exactly the parameters outside literals and comments are bound, in order, and the text
    /// around them is kept.
    #[test]
    fn only_real_parameters_are_bound(pieces in prop::collection::vec(piece(), 0..12)) {
        let text = render(&pieces);
        let wanted: Vec<String> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Parameter(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        for backend in [Backend::MySql, Backend::Sqlite] {
            let query = NamedQuery::parse(&text, backend).unwrap();
            prop_assert_eq!(query.binds(), wanted.as_slice());
            let mut back = query.sql().to_owned();
            for name in &wanted {
                back = back.replacen('?', &format!(":{name}"), 1);
            }
            // Literals may hold `?` themselves: compare only when they do not.
            if !text.contains('?') {
                prop_assert_eq!(&back, &text);
            }
        }
        let postgres = NamedQuery::parse(&text, Backend::Postgres).unwrap();
        let mut distinct: Vec<String> = Vec::new();
        for name in &wanted {
            if !distinct.contains(name) {
                distinct.push(name.clone());
            }
        }
        prop_assert_eq!(postgres.binds(), distinct.as_slice());
    }
}
