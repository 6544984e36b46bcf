//! The S3 client of one cleaner, built once at start from its settings: the bucket, an
//! S3-compatible endpoint, the region and the credentials (named by `_env`/`_file`, else the
//! usual `AWS_*` environment).

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::config::ObjectStoreCleanerConfig;

/// Lethe retries a failed attempt on the cleaner's own `retry` schedule: within one attempt the
/// client tries a call only a few times, briefly, so that an outage fails the attempt soon.
fn retry(timeout: Duration) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: timeout,
    }
}

/// The client; `key` names a setting of this cleaner (`cleaners[2].endpoint`) for the errors.
pub fn build(
    settings: &ObjectStoreCleanerConfig,
    timeout: Duration,
    key: &dyn Fn(&str) -> String,
) -> Result<AmazonS3, String> {
    let bucket = settings
        .bucket()
        .ok_or_else(|| format!("{}: not an s3://<bucket> URL", key("url")))?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry(timeout))
        .with_client_options(
            ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(timeout.min(Duration::from_secs(5)))
                .with_allow_http(
                    settings
                        .endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                ),
        );
    if let Some(endpoint) = &settings.endpoint {
        // An S3-compatible server is reached at endpoint/bucket/key.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    } else if settings.endpoint.is_some() && std::env::var_os("AWS_REGION").is_none() {
        builder = builder.with_region("us-east-1");
    }
    let access_key_id = settings
        .access_key_id()
        .read(&key("access_key_id"))
        .map_err(|e| e.to_string())?;
    let secret_access_key = settings
        .secret_access_key()
        .read(&key("secret_access_key"))
        .map_err(|e| e.to_string())?;
    if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    builder
        .build()
        .map_err(|e| format!("the S3 client cannot be built from {}: {e}", key("url")))
}
