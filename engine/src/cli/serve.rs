//! `lethe serve`: the HTTP API with the workflow, until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::Args;

use super::open::{master_key, redact};
use super::Context;
use crate::app::Requests;
use crate::config::DEFAULT_LISTEN;
use crate::http::{router, AppState};
use crate::root::Database;
use crate::root::Runtime;
use crate::store::key_ring;
use crate::store::master_key::KeySource;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "LETHE_LISTEN")]
    listen: Option<String>,
}

pub(super) async fn run(context: Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .or_else(|| context.config.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let Context {
        config,
        database_url,
        dev_master_key,
    } = context;
    let source = KeySource::for_database(&database_url, dev_master_key)?;
    let database = Database::open_with(&database_url, true, config.database.acquire_timeout.0)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&database_url)))?;
    let key = master_key(&database, &source).await?;
    // Learns the new key of a rotation begun elsewhere (and forgets the retired one).
    let refresh = key_ring::spawn_refresh(
        database.keys.clone(),
        key.clone(),
        key_ring::REFRESH_INTERVAL,
    );
    let config = Arc::new(config);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    if config.tokens.is_empty() {
        if !address.ip().is_loopback() {
            bail!(
                "no [[tokens]] are configured, so auth is off; refusing to listen on {address}, \
                 which is not a loopback address (create a token with `lethe token create`)"
            );
        }
        tracing::warn!(
            listen = %address,
            "AUTH IS OFF: no [[tokens]] configured; every caller has every scope. \
             Serving on loopback only."
        );
    }
    let public_url = config
        .engine
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let requests = Requests::new(database.events.clone(), config.clone())
        .with_read_models(database.read_models.clone())
        .with_sealing(key.clone(), database.keys.clone());
    let runtime = Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        key.clone(),
        public_url,
    );
    let state = AppState { requests, key };
    tracing::info!(listen = %address, database = %redact(&database_url), "lethe is serving");
    crate::http::serve(listener, router(state), shutdown_signal()).await?;
    runtime.stop().await;
    refresh.abort();
    tracing::info!("lethe stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
    // Event streams never end by themselves: end them so the shutdown can finish.
    crate::http::events::close_streams();
}
