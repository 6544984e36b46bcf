//! `lethe.toml` for tests, built from typed settings instead of formatted strings:
//! `TestConfig::new().grace("1s").no_reminders().cleaner(Cleaner::http("crm", url))`.
//! The settings are serialised to TOML and read back by the engine's own `Config::parse`, so a
//! test runs on exactly what an operator's file would give (every check included), and a test
//! that starts the binary writes the same text to a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lethe_engine::config::Config;
use serde::Serialize;

use super::fake_service::SECRET;

#[derive(Debug, Clone, Default, Serialize)]
pub struct TestConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<Policy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<Engine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api: Option<Api>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notifier: Option<Notifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<Kafka>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sources: BTreeMap<String, Source>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cleaners: Vec<Cleaner>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stores: Vec<Store>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<Token>,
}

/// `[[stores]]`: a declared store, its identifier kinds and the cleaners that erase it.
#[derive(Debug, Clone, Serialize)]
struct Store {
    name: String,
    identifiers: Vec<String>,
    cleaners: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reminders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_after_completion: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_risk_days: Option<u32>,
}

/// `[sources.<name>]`.
#[derive(Debug, Clone, Serialize)]
struct Source {
    approval: String,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Engine {
    #[serde(skip_serializing_if = "Option::is_none")]
    poll_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Api {
    #[serde(skip_serializing_if = "Option::is_none")]
    body_idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Notifier {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Kafka {
    brokers: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    publish: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
struct Token {
    name: String,
    sha256: String,
    scopes: Vec<String>,
}

/// One `[[cleaners]]` entry: `Cleaner::http(name, url)` (signed with the fake services'
/// secret), `Cleaner::kafka(name)`, `Cleaner::manual(name)` or `Cleaner::raw(name, kind,
/// lines)`, then any of its settings (`.extra(lines)` for those without a method).
#[derive(Debug, Clone, Serialize)]
pub struct Cleaner {
    name: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<Retry>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    routing: Option<Routing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<Window>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_flight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifiers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<Batch>,
    /// Settings given as raw TOML lines ([`Cleaner::raw`], [`Cleaner::extra`]).
    #[serde(flatten)]
    extra: toml::Table,
}

#[derive(Debug, Clone, Serialize)]
struct Batch {
    max: u32,
    wait: String,
}

#[derive(Debug, Clone, Serialize)]
struct Retry {
    max_attempts: u32,
    initial: String,
    max: String,
    multiplier: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Routing {
    jurisdictions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Window {
    start: String,
    end: String,
    tz: String,
}

impl Cleaner {
    fn of(name: &str, kind: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: None,
            secret: None,
            timeout: None,
            callback_timeout: None,
            retry: None,
            routing: None,
            window: None,
            max_in_flight: None,
            rate_per_second: None,
            identifiers: None,
            after: Vec::new(),
            batch: None,
            extra: toml::Table::new(),
        }
    }

    /// A cleaner of any kind, its settings given as TOML lines (as under `[[cleaners]]`),
    /// for kinds this builder has no constructor for:
    /// `Cleaner::raw("db", "sql", r#"url = "postgres://..."\nstatements = ["..."]"#)`.
    pub fn raw(name: &str, kind: &'static str, lines: &str) -> Self {
        Self::of(name, kind).extra(lines)
    }

    /// More settings as TOML lines, e.g. `.extra(r#"after = ["db"]"#)`; a key given twice
    /// keeps the last value.
    pub fn extra(mut self, lines: &str) -> Self {
        let table: toml::Table = lines
            .parse()
            .unwrap_or_else(|e| panic!("the cleaner's extra lines are not TOML: {e}\n{lines}"));
        self.extra.extend(table);
        self
    }

    /// A cleaner called over HTTP at `url`, signing with [`SECRET`].
    pub fn http(name: &str, url: &str) -> Self {
        Self {
            url: Some(url.to_owned()),
            secret: Some(SECRET.to_owned()),
            ..Self::of(name, "http")
        }
    }

    pub fn kafka(name: &str) -> Self {
        Self::of(name, "kafka")
    }

    pub fn manual(name: &str) -> Self {
        Self::of(name, "manual")
    }

    pub fn timeout(self, timeout: &str) -> Self {
        Self {
            timeout: Some(timeout.to_owned()),
            ..self
        }
    }

    pub fn callback_timeout(self, timeout: &str) -> Self {
        Self {
            callback_timeout: Some(timeout.to_owned()),
            ..self
        }
    }

    pub fn retry(self, max_attempts: u32, initial: &str, max: &str, multiplier: f64) -> Self {
        let retry = Retry {
            max_attempts,
            initial: initial.to_owned(),
            max: max.to_owned(),
            multiplier,
        };
        Self {
            retry: Some(retry),
            ..self
        }
    }

    /// Told only of requests of these jurisdictions.
    pub fn jurisdictions(self, jurisdictions: &[&str]) -> Self {
        let routing = Routing {
            jurisdictions: jurisdictions.iter().map(|j| (*j).to_owned()).collect(),
        };
        Self {
            routing: Some(routing),
            ..self
        }
    }

    /// Called only between `start` and `end` (`HH:MM`) in `tz`.
    pub fn window(self, start: &str, end: &str, tz: &str) -> Self {
        let window = Window {
            start: start.to_owned(),
            end: end.to_owned(),
            tz: tz.to_owned(),
        };
        Self {
            window: Some(window),
            ..self
        }
    }

    pub fn max_in_flight(self, max: u32) -> Self {
        Self {
            max_in_flight: Some(max),
            ..self
        }
    }

    pub fn rate_per_second(self, rate: f64) -> Self {
        Self {
            rate_per_second: Some(rate),
            ..self
        }
    }

    /// Receives only these identifier kinds of the subject.
    pub fn identifiers(self, kinds: &[&str]) -> Self {
        Self {
            identifiers: Some(kinds.iter().map(|k| (*k).to_owned()).collect()),
            ..self
        }
    }

    /// Called for a request only once these cleaners succeeded or were skipped.
    pub fn after(self, cleaners: &[&str]) -> Self {
        Self {
            after: cleaners.iter().map(|c| (*c).to_owned()).collect(),
            ..self
        }
    }

    /// Due requests sent together, up to `max` in one call, the first waiting `wait`.
    pub fn batch(self, max: u32, wait: &str) -> Self {
        let batch = Batch {
            max,
            wait: wait.to_owned(),
        };
        Self {
            batch: Some(batch),
            ..self
        }
    }
}

impl TestConfig {
    pub fn new() -> Self {
        Self::default()
    }

    fn policy(&mut self) -> &mut Policy {
        self.policy.get_or_insert_with(Policy::default)
    }

    fn engine(&mut self) -> &mut Engine {
        self.engine.get_or_insert_with(Engine::default)
    }

    /// `[policy] grace_period`.
    pub fn grace(mut self, period: &str) -> Self {
        self.policy().grace_period = Some(period.to_owned());
        self
    }

    /// `[policy] reminders`.
    pub fn reminders(mut self, reminders: &[&str]) -> Self {
        self.policy().reminders = Some(reminders.iter().map(|r| (*r).to_owned()).collect());
        self
    }

    /// `[policy] approval` ("none" or "required").
    pub fn approval(mut self, approval: &str) -> Self {
        self.policy().approval = Some(approval.to_owned());
        self
    }

    /// `[policy] at_risk_days`.
    pub fn at_risk_days(mut self, days: u32) -> Self {
        self.policy().at_risk_days = Some(days);
        self
    }

    /// `[sources.<source>] approval`.
    pub fn source_approval(mut self, source: &str, approval: &str) -> Self {
        self.sources.insert(
            source.to_owned(),
            Source {
                approval: approval.to_owned(),
            },
        );
        self
    }

    pub fn no_reminders(self) -> Self {
        self.reminders(&[])
    }

    /// `[policy] retention_after_completion`.
    pub fn retention(mut self, retention: &str) -> Self {
        self.policy().retention_after_completion = Some(retention.to_owned());
        self
    }

    /// `[engine] poll_interval`.
    pub fn poll_interval(mut self, interval: &str) -> Self {
        self.engine().poll_interval = Some(interval.to_owned());
        self
    }

    /// `[engine] lease`.
    pub fn lease(mut self, lease: &str) -> Self {
        self.engine().lease = Some(lease.to_owned());
        self
    }

    /// `[engine] public_url`: the base of the callback URLs cleaners are given.
    pub fn public_url(mut self, url: &str) -> Self {
        self.engine().public_url = Some(url.to_owned());
        self
    }

    /// `[api] body_idle_timeout`.
    pub fn body_idle_timeout(mut self, timeout: &str) -> Self {
        self.api = Some(Api {
            body_idle_timeout: Some(timeout.to_owned()),
        });
        self
    }

    /// `[notifier]` at `url`, signing with `secret` if given, with its own timeout if given.
    pub fn notifier(mut self, url: &str, secret: Option<&str>, timeout: Option<&str>) -> Self {
        self.notifier = Some(Notifier {
            url: url.to_owned(),
            secret: secret.map(str::to_owned),
            timeout: timeout.map(str::to_owned),
        });
        self
    }

    /// `[kafka] brokers`.
    pub fn kafka(mut self, brokers: &str) -> Self {
        self.kafka = Some(Kafka {
            brokers: brokers.to_owned(),
            publish: BTreeMap::new(),
        });
        self
    }

    /// `[kafka] publish`: events of these types go to `topic` (after [`Self::kafka`]).
    pub fn publish(mut self, event_types: &[&str], topic: &str) -> Self {
        let kafka = self
            .kafka
            .as_mut()
            .expect("publish needs [kafka] brokers first");
        for event_type in event_types {
            kafka
                .publish
                .insert((*event_type).to_owned(), topic.to_owned());
        }
        self
    }

    pub fn cleaner(mut self, cleaner: Cleaner) -> Self {
        self.cleaners.push(cleaner);
        self
    }

    /// A declared store (`[[stores]]`) holding `identifiers`, erased by `cleaners`.
    pub fn store(mut self, name: &str, identifiers: &[&str], cleaners: &[&str]) -> Self {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        self.stores.push(Store {
            name: name.to_owned(),
            identifiers: owned(identifiers),
            cleaners: owned(cleaners),
        });
        self
    }

    /// An API token named `name` whose SHA-256 is `sha256`, with these scopes.
    pub fn token(mut self, name: &str, sha256: &str, scopes: &[&str]) -> Self {
        self.tokens.push(Token {
            name: name.to_owned(),
            sha256: sha256.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        });
        self
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        toml::to_string(self).expect("test settings serialise to TOML")
    }

    /// The engine's configuration, read from [`Self::toml`] as `lethe` reads its file.
    pub fn build(&self) -> Config {
        let text = self.toml();
        Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Writes [`Self::toml`] to `dir/lethe.toml`; returns the path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("lethe.toml");
        std::fs::write(&path, self.toml()).unwrap();
        path
    }
}
