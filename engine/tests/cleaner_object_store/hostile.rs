//! Identifiers that would widen the deletion if they were copied into a key as they are: only
//! the subject's own objects go, whatever the value.

use super::*;

const SETTINGS: &str = r#"keys = ["avatars/{user_id}.png"]
prefixes = ["uploads/{user_id}/"]"#;

/// The subject `42`'s objects, and neighbours that must all survive.
const OWN: &[&str] = &["avatars/42.png", "uploads/42/a.png", "uploads/42/b/c.png"];
const NEIGHBOURS: &[&str] = &[
    "avatars/420.png",
    "avatars/4200.png",
    "avatars/42x.png",
    "avatars/43.png",
    "uploads/420/a.png",
    "uploads/4200/a.png",
    "uploads/42x/a.png",
    "uploads/43/a.png",
    "uploads/a.png",
    "uploads/*/a.png",
    "uploads/x/%2E%2E/42/a.png",
    "secrets/42/a.png",
];

#[tokio::test]
async fn hostile_identifiers_delete_nothing_but_the_subjects_own_objects() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    fx.put(BUCKET, OWN).await;
    fx.put(BUCKET, NEIGHBOURS).await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let everything: BTreeSet<String> = OWN
        .iter()
        .chain(NEIGHBOURS)
        .map(|k| (*k).to_owned())
        .collect();

    for hostile in [
        "4",
        "42 ",
        "*",
        "4*",
        "../42",
        "..",
        ".",
        "/",
        "42/",
        "/42",
        "x/../42",
        "%2A",
        "43/..",
        "",
        "420/..",
        "?",
        "uploads/42",
    ] {
        let outcome = attempt(&cleaner, &subject(&[("user_id", hostile)])).await;
        assert_eq!(deleted(&outcome), 0, "{hostile:?}: {outcome:?}");
        assert_eq!(
            fx.keys(BUCKET).await,
            everything,
            "{hostile:?} deleted something"
        );
    }

    let outcome = attempt(&cleaner, &subject(&[("user_id", "42")])).await;
    assert_eq!(deleted(&outcome), 3, "{outcome:?}");
    let left: BTreeSet<String> = NEIGHBOURS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(fx.keys(BUCKET).await, left);
}

#[tokio::test]
async fn an_empty_identifier_is_skipped_and_says_so() {
    let Some(fx) = Fixture::start().await else {
        return;
    };
    fx.put(BUCKET, NEIGHBOURS).await;
    let cleaner = fx.cleaner(BUCKET, SETTINGS);
    let outcome = attempt(&cleaner, &subject(&[("user_id", "")])).await;
    assert_eq!(deleted(&outcome), 0);
    let Outcome::Succeeded { detail, .. } = outcome else {
        unreachable!()
    };
    assert_eq!(
        detail.as_deref(),
        Some("keys[0]: skipped: the subject has no user_id; prefixes[0]: skipped: the subject has no user_id")
    );
    assert_eq!(fx.keys(BUCKET).await.len(), NEIGHBOURS.len());
}
