//! Reading an object's key from what an application stored about it: a bare key, or a URL of
//! the bucket (`s3://bucket/key`, `https://bucket.s3.region.amazonaws.com/key`,
//! `https://s3.region.amazonaws.com/bucket/key`, `<endpoint>/bucket/key`). A URL of any other
//! bucket or host names nothing this cleaner may delete.

use percent_encoding::percent_decode_str;
use reqwest::Url;

/// What a stored value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A key of this cleaner's bucket.
    Key(String),
    /// An object of another bucket (or another host): never deleted.
    Elsewhere,
}

/// The bucket a cleaner deletes from, and the S3-compatible endpoint it is reached at.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub name: String,
    pub endpoint: Option<Url>,
}

impl Bucket {
    /// What `value` names: a URL is read as one, anything else is a key.
    pub fn read(&self, value: &str) -> Named {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if bucket == self.name => Named::Key(key.to_owned()),
                _ => Named::Elsewhere,
            };
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            return match Url::parse(value) {
                Ok(url) => self.read_url(&url),
                Err(_) => Named::Elsewhere,
            };
        }
        Named::Key(value.trim_start_matches('/').to_owned())
    }

    fn read_url(&self, url: &Url) -> Named {
        let host = url.host_str().unwrap_or_default();
        let path = decoded_path(url);
        if let Some(endpoint) = &self.endpoint {
            if url.origin() == endpoint.origin() {
                let base = endpoint.path().trim_matches('/');
                let path = path
                    .strip_prefix(base)
                    .unwrap_or(&path)
                    .trim_start_matches('/');
                return self.path_style(path);
            }
        }
        if let Some(bucket) = virtual_host_bucket(host) {
            return if bucket == self.name {
                Named::Key(path.to_owned())
            } else {
                Named::Elsewhere
            };
        }
        if is_aws_s3_host(host) {
            return self.path_style(&path);
        }
        Named::Elsewhere
    }

    /// `bucket/key`.
    fn path_style(&self, path: &str) -> Named {
        match path.split_once('/') {
            Some((bucket, key)) if bucket == self.name => Named::Key(key.to_owned()),
            _ => Named::Elsewhere,
        }
    }
}

/// The URL's path without its leading `/`, percent-decoded (the key as stored).
fn decoded_path(url: &Url) -> String {
    let path = url.path().trim_start_matches('/');
    percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// `s3.amazonaws.com`, `s3.eu-west-1.amazonaws.com`, `s3-eu-west-1.amazonaws.com`.
fn is_aws_s3_host(host: &str) -> bool {
    host.strip_suffix(".amazonaws.com")
        .is_some_and(|rest| rest == "s3" || rest.starts_with("s3.") || rest.starts_with("s3-"))
}

/// `bucket` of `bucket.s3.amazonaws.com`, `bucket.s3.eu-west-1.amazonaws.com` or
/// `bucket.s3-eu-west-1.amazonaws.com`.
fn virtual_host_bucket(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    if let Some(bucket) = rest.strip_suffix(".s3") {
        return Some(bucket);
    }
    // The last `.s3.` or `.s3-` label starts the service's part (a bucket may hold dots).
    let at = [rest.rfind(".s3."), rest.rfind(".s3-")]
        .into_iter()
        .flatten()
        .max()?;
    Some(&rest[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Bucket {
        Bucket {
            name: "uploads".to_owned(),
            endpoint: Some(Url::parse("http://127.0.0.1:9000").unwrap()),
        }
    }

    #[test]
    fn keys_are_read_from_every_url_shape_of_the_bucket() {
        let b = bucket();
        let key = |k: &str| Named::Key(k.to_owned());
        assert_eq!(b.read("a/b.png"), key("a/b.png"));
        assert_eq!(b.read("/a/b.png"), key("a/b.png"));
        assert_eq!(b.read("s3://uploads/a/b.png"), key("a/b.png"));
        assert_eq!(
            b.read("https://uploads.s3.eu-west-1.amazonaws.com/a/b%20c.png"),
            key("a/b c.png")
        );
        assert_eq!(
            b.read("https://uploads.s3.amazonaws.com/a.png"),
            key("a.png")
        );
        assert_eq!(
            b.read("https://uploads.s3-eu-west-1.amazonaws.com/a.png"),
            key("a.png")
        );
        assert_eq!(
            b.read("https://my.uploads.s3.amazonaws.com/a.png"),
            Named::Elsewhere
        );
        assert_eq!(
            b.read("https://s3.eu-west-1.amazonaws.com/uploads/a.png"),
            key("a.png")
        );
        assert_eq!(
            b.read("http://127.0.0.1:9000/uploads/a/b.png"),
            key("a/b.png")
        );
    }

    #[test]
    fn another_bucket_or_host_names_nothing() {
        let b = bucket();
        for value in [
            "s3://other/a.png",
            "s3://uploads",
            "https://other.s3.eu-west-1.amazonaws.com/a.png",
            "https://s3.eu-west-1.amazonaws.com/other/a.png",
            "http://127.0.0.1:9000/other/a.png",
            "http://127.0.0.1:9001/uploads/a.png",
            "https://cdn.example.com/uploads/a.png",
            "https://uploads.s3.amazonaws.com.evil.example/a.png",
        ] {
            assert_eq!(b.read(value), Named::Elsewhere, "{value}");
        }
    }
}
