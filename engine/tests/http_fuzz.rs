//! Random bodies thrown at the request parser (proptest): whatever arrives — random bytes,
//! random JSON, near-miss submissions with wrong types and odd strings — the API never
//! panics and never answers 5xx; a well-formed submission among them is accepted.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use lethe_engine::app::Requests;
use lethe_engine::config::Config;
use lethe_engine::http::{router, AppState};
use lethe_engine::store::master_key::MasterKey;
use proptest::prelude::*;
use tower::ServiceExt;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{0,12}|.{0,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Submissions that are almost right: the real field names with random values.
fn near_submission() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(prop_oneof![
            prop::collection::btree_map("[a-z_]{0,40}|.{0,6}", ".{0,300}", 0..20)
                .prop_map(|m| serde_json::json!(m)),
            json_value(),
        ]),
        prop::option::of(prop_oneof![
            "gdpr|ccpa|lgpd|GDPR|",
            json_value().prop_map(|v| v.to_string())
        ]),
        prop::option::of(".{0,1100}"),
        prop::option::of(prop::collection::vec(".{0,70}", 0..20)),
    )
        .prop_map(|(subject, jurisdiction, reason, tags)| {
            let mut body = serde_json::Map::new();
            if let Some(subject) = subject {
                body.insert("subject".into(), subject);
            }
            if let Some(jurisdiction) = jurisdiction {
                body.insert("jurisdiction".into(), jurisdiction.into());
            }
            if let Some(reason) = reason {
                body.insert("reason".into(), reason.into());
            }
            if let Some(tags) = tags {
                body.insert("tags".into(), tags.into());
            }
            serde_json::Value::Object(body)
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        near_submission().prop_map(|v| v.to_string().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bodies_never_panic_or_5xx(bodies in prop::collection::vec(body(), 1..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = support::sqlite().await;
            let (events, _) = store.stores();
            let app = router(AppState {
                requests: Requests::new(events, Arc::new(Config::default())),
                key: MasterKey::from_bytes([3; 32]),
            });
            for body in bodies {
                let request = Request::post("/v1/requests").body(Body::from(body.clone())).unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                assert!(
                    status.as_u16() < 500,
                    "{status} for {:?}",
                    String::from_utf8_lossy(&body)
                );
                if status.is_client_error() && status.as_u16() != 413 {
                    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
                    assert_eq!(content_type, "application/problem+json");
                }
            }
        });
    }
}
