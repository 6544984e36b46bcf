//! Starting and stopping the workflow inside one engine process: the saga subscription, the
//! projections' subscription, the Kafka relay and results consumer, the timer worker and the
//! dispatch worker, as tasks that stop together on shutdown. The cleaners are built here from
//! the configuration, one per configured cleaner, by kind.

mod database;
pub mod dry_run;
pub mod keys;
mod serve;
mod service;

pub use database::Database;
pub use serve::{redact, serve, Serve, ServeError};
pub use service::PROJECTIONS;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::Requests;
use crate::cleaners::http::HttpCleaner;
use crate::cleaners::kafka::{KafkaCleaner, OwnTopic, RenewingProducer};
use crate::cleaners::manual::ManualCleaner;
use crate::cleaners::object_store::ObjectStoreCleaner;
use crate::cleaners::redis::RedisCleaner;
use crate::cleaners::sql::SqlCleaner;
use crate::cleaners::{BuildError, Cleaner, Registry};
use crate::config::{CleanerKind, Config, HttpCleanerConfig};
use crate::kafka::KafkaRelay;
use crate::projections::RequestsProjector;
use crate::store::master_key::MasterKey;
use crate::subscriptions::{owner_id, SubscriptionRunner, Writing};
use crate::workflow::saga::Saga;
use crate::workflow::{CallbackJobs, Workers, WorkflowStore};

/// The running workflow; [`Runtime::stop`] ends it cleanly.
#[derive(Debug)]
pub struct Runtime {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Runtime {
    pub fn start(
        requests: Requests,
        workflow: Arc<dyn WorkflowStore>,
        config: Arc<Config>,
        key: MasterKey,
        public_url: String,
    ) -> Result<Self, BuildError> {
        // First, so that a cleaner that cannot be built stops everything before it starts.
        let cleaners = keyed_cleaners(&config, Some(&key))?;
        let owner = owner_id();
        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let runner = SubscriptionRunner {
            events: requests.store().clone(),
            subscriptions: workflow.clone(),
            owner: owner.clone(),
            lease: config.engine.lease.0,
            poll_interval: config.engine.poll_interval.0,
        };
        let saga = Writing {
            subscriber: Saga {
                config: config.clone(),
            },
            sink: workflow.clone(),
        };
        let stop = watcher.clone();
        let saga_runner = runner.clone();
        tasks.spawn(async move { saga_runner.run(&saga, stop).await });
        if let Some(kafka) = &config.kafka {
            match crate::kafka::producer(&kafka.brokers) {
                Ok(producer) => {
                    let relay = KafkaRelay {
                        producer,
                        topics: kafka.publish.clone(),
                        sink: Arc::new(CallbackJobs(workflow.clone())),
                        kafka_cleaners: crate::kafka::kafka_cleaners(&config),
                    };
                    let relay_runner = SubscriptionRunner {
                        poll_interval: runner.poll_interval.max(crate::kafka::RETRY_INTERVAL / 10),
                        ..runner.clone()
                    };
                    let stop = watcher.clone();
                    tasks.spawn(async move { relay_runner.run(&relay, stop).await });
                    let results = crate::kafka::run_results_consumer(
                        kafka.clone(),
                        requests.clone(),
                        watcher.clone(),
                    );
                    tasks.spawn(results);
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot create the Kafka producer; the relay is not running");
                }
            }
        }
        if let Some(projections) = requests.projections().cloned() {
            let projector = RequestsProjector { store: projections };
            let stop = watcher.clone();
            tasks.spawn(async move { runner.run(&projector, stop).await });
        }

        let workers = Arc::new(Workers::new(
            requests,
            workflow,
            config,
            key,
            owner.clone(),
            public_url,
            cleaners,
        ));
        tasks.spawn(workers.clone().run_timers(watcher.clone()));
        tasks.spawn(workers.run_dispatch(watcher));
        tracing::info!(owner = %owner, "workflow started");
        Ok(Self { shutdown, tasks })
    }

    /// Signals every task to stop and waits for them (cleaner calls in flight finish first).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!("workflow stopped");
    }
}

/// Every configured cleaner, by kind, without the master key: a Kafka cleaner with
/// `partition_key = "subject"` cannot publish (what `lethe cleaners test` needs).
pub fn cleaners(config: &Config) -> Result<Registry, BuildError> {
    keyed_cleaners(config, None)
}

/// Every configured cleaner, by kind. The Kafka cleaners share one producer for what they
/// publish (without one, each attempt waits for a later try), and derive their subject
/// partition keys from `key`. A cleaner that cannot be built from its settings (a secret
/// that cannot be read) is an error naming it.
pub fn keyed_cleaners(config: &Config, key: Option<&MasterKey>) -> Result<Registry, BuildError> {
    let client = crate::cleaners::http::client();
    let kafka_cleaners = config.cleaners.iter().any(|c| c.kind.is_kafka());
    let producer: Option<Arc<RenewingProducer>> = match &config.kafka {
        Some(kafka) if kafka_cleaners => crate::kafka::producer(&kafka.brokers)
            .map(Arc::new)
            .map_err(|error| {
                tracing::error!(error = %error, "cannot create the Kafka producer; Kafka cleaners' retries wait for it");
            })
            .ok(),
        _ => None,
    };
    let due_topic = config
        .kafka
        .as_ref()
        .and_then(|k| k.publish.get("Due"))
        .cloned();
    let mut registry = Registry::default();
    for cleaner in &config.cleaners {
        let built: Arc<dyn Cleaner> = match &cleaner.kind {
            CleanerKind::Http(HttpCleanerConfig { url, secret, .. }) => Arc::new(
                HttpCleaner::new(
                    client.clone(),
                    url.clone(),
                    secret.clone(),
                    cleaner.timeout.0,
                )
                .with_callback_timeout(cleaner.callback_timeout.0),
            ),
            CleanerKind::Kafka(settings) => {
                let built = KafkaCleaner::new(
                    producer.clone(),
                    due_topic.clone(),
                    cleaner.callback_timeout.0,
                );
                Arc::new(match (&settings.topic, &config.kafka) {
                    (Some(topic), Some(kafka)) => built.with_own_topic(OwnTopic {
                        topic: topic.clone(),
                        results_topic: kafka.results_topic.clone(),
                        partition_key: settings.partition_key,
                        identifiers: cleaner.identifiers.clone(),
                        batched: cleaner.batch.is_some(),
                        keys: key.cloned(),
                    }),
                    _ => built,
                })
            }
            CleanerKind::Manual(_) => Arc::new(ManualCleaner),
            CleanerKind::Sql(settings) => Arc::new(SqlCleaner::new(cleaner, settings)?),
            CleanerKind::ObjectStore(settings) => {
                Arc::new(ObjectStoreCleaner::new(cleaner, settings)?)
            }
            CleanerKind::Redis(settings) => Arc::new(RedisCleaner::new(cleaner, settings)?),
        };
        registry.insert(cleaner.name.clone(), built);
    }
    Ok(registry)
}
