//! One test's part of the Redis server: every key under a prefix of its own, seeded with a
//! subject's data and its neighbours, read back whole to see what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

/// The subject most tests erase, and the neighbours whose data must stay: ids that 42 is a
/// prefix of, and ids made of glob characters.
pub const SUBJECT: &str = "42";
pub const EMAIL: &str = "ada@example.com";
pub const NEIGHBOURS: [&str; 6] = ["420", "4200", "*", "?", "[a]", "\\"];

pub struct Keyspace {
    pub url: String,
    pub prefix: String,
    connection: MultiplexedConnection,
}

impl Keyspace {
    pub async fn open(url: &str) -> Self {
        let client = redis::Client::open(url).unwrap();
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        Self {
            url: url.to_owned(),
            prefix: format!("lethe-test:{}:", uuid::Uuid::new_v4().simple()),
            connection,
        }
    }

    /// The host and port of the server, for a proxy in front of it.
    pub fn addr(&self) -> SocketAddr {
        let url = reqwest::Url::parse(&self.url).unwrap();
        let host = url.host_str().unwrap();
        let host = if host == "localhost" {
            "127.0.0.1"
        } else {
            host
        };
        format!("{host}:{}", url.port().unwrap_or(6379))
            .parse()
            .unwrap()
    }

    /// The URL with another host and port (a proxy's), same database.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = reqwest::Url::parse(&self.url).unwrap();
        url.set_ip_host(addr.ip()).unwrap();
        url.set_port(Some(addr.port())).unwrap();
        url.to_string()
    }

    /// The cleaner settings every test uses, under this prefix.
    pub fn settings(&self) -> String {
        let p = &self.prefix;
        format!(
            r#"keys = ["{p}user:{{user_id}}", "{p}profile:{{email}}"]
patterns = ["{p}session:{{user_id}}:*"]
hash_fields = [{{ key = "{p}last_seen", field = "{{user_id}}" }}]"#
        )
    }

    /// The subject's and the neighbours' data: a user key, two sessions and a field each, and
    /// the subject's profile and a neighbour's.
    pub async fn seed(&mut self) {
        for id in std::iter::once(SUBJECT).chain(NEIGHBOURS) {
            self.set(&format!("user:{id}")).await;
            self.set(&format!("session:{id}:a")).await;
            self.set(&format!("session:{id}:b")).await;
            self.hset("last_seen", id).await;
        }
        self.set(&format!("profile:{EMAIL}")).await;
        self.set("profile:bob@example.com").await;
    }

    /// Sets `prefix + key` to a string.
    pub async fn set(&mut self, key: &str) {
        let key = format!("{}{key}", self.prefix);
        let () = self.connection.set(key, "x").await.unwrap();
    }

    /// Sets every `prefix + key` to a string, in one pipeline.
    pub async fn set_many(&mut self, keys: &[String]) {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.set(format!("{}{key}", self.prefix), "x").ignore();
        }
        let () = pipe.query_async(&mut self.connection).await.unwrap();
    }

    /// Sets field `field` of the hash `prefix + key`.
    pub async fn hset(&mut self, key: &str, field: &str) {
        let key = format!("{}{key}", self.prefix);
        let _: u64 = self.connection.hset(key, field, "x").await.unwrap();
    }

    /// Every key under the prefix (without it), and for hashes their fields.
    pub async fn dump(&mut self) -> BTreeMap<String, BTreeSet<String>> {
        let keys = self.keys().await;
        let mut dump = BTreeMap::new();
        for key in keys {
            let full = format!("{}{key}", self.prefix);
            let kind: String = redis::cmd("TYPE")
                .arg(&full)
                .query_async(&mut self.connection)
                .await
                .unwrap();
            let fields: BTreeSet<String> = if kind == "hash" {
                self.connection.hkeys(&full).await.unwrap()
            } else {
                BTreeSet::new()
            };
            dump.insert(key, fields);
        }
        dump
    }

    /// Every key under the prefix, without it.
    pub async fn keys(&mut self) -> BTreeSet<String> {
        let pattern = format!("{}*", self.prefix);
        let mut found = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.connection)
                .await
                .unwrap();
            found.extend(keys.into_iter().map(|k| k[self.prefix.len()..].to_owned()));
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    }

    /// Removes every key under the prefix.
    pub async fn clean_up(mut self) {
        let keys: Vec<String> = self
            .keys()
            .await
            .into_iter()
            .map(|k| format!("{}{k}", self.prefix))
            .collect();
        for chunk in keys.chunks(500) {
            let _: u64 = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut self.connection)
                .await
                .unwrap();
        }
    }
}

/// What [`Keyspace::seed`] leaves once the subject `id` is erased: everything but its user
/// key, its sessions, its field (and, for [`SUBJECT`], its profile).
pub fn seeded_without(erased: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut dump = BTreeMap::new();
    let mut fields = BTreeSet::new();
    for id in std::iter::once(SUBJECT).chain(NEIGHBOURS) {
        if erased.contains(&id) {
            continue;
        }
        for key in [
            format!("user:{id}"),
            format!("session:{id}:a"),
            format!("session:{id}:b"),
        ] {
            dump.insert(key, BTreeSet::new());
        }
        fields.insert(id.to_owned());
    }
    if !erased.contains(&SUBJECT) {
        dump.insert(format!("profile:{EMAIL}"), BTreeSet::new());
    }
    dump.insert("profile:bob@example.com".to_owned(), BTreeSet::new());
    if !fields.is_empty() {
        dump.insert("last_seen".to_owned(), fields);
    }
    dump
}
