//! `lethe serve`: one engine process. Opens the database and the master key, keeps the key
//! ring fresh, serves the HTTP API and runs the workflow until SIGINT or SIGTERM, then
//! finishes the requests in flight and stops.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Database, Runtime};
use crate::cleaners::BuildError;
use crate::config::Config;
use crate::http::{router, AppState};
use crate::store::key_ring;
use crate::store::master_key::{KeyError, KeySource};
use crate::store::OpenError;

/// What `lethe serve` is told.
#[derive(Debug)]
pub struct Serve {
    pub config: Arc<Config>,
    pub database_url: String,
    /// The address to listen on.
    pub listen: String,
    /// Whether a development master key may be used on Postgres.
    pub dev_master_key: bool,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot open the database {url}")]
    Open {
        url: String,
        #[source]
        source: OpenError,
    },
    #[error("cannot listen on {listen}")]
    Listen {
        listen: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no [[tokens]] are configured, so auth is off; refusing to listen on {0}, which is not \
         a loopback address (create a token with `lethe token create`)"
    )]
    PublicWithoutTokens(SocketAddr),
    #[error(transparent)]
    Cleaner(#[from] BuildError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves until SIGINT or SIGTERM.
pub async fn serve(serve: Serve) -> Result<(), ServeError> {
    let Serve {
        config,
        database_url,
        listen,
        dev_master_key,
    } = serve;
    let source = KeySource::for_database(&database_url, dev_master_key)?;
    let database = Database::open_with(&database_url, true, config.database.acquire_timeout.0)
        .await
        .map_err(|source| ServeError::Open {
            url: redact(&database_url),
            source,
        })?;
    let key = database.master_key(&source).await?;
    // Learns the new key of a rotation begun elsewhere (and forgets the retired one).
    let refresh = key_ring::spawn_refresh(
        database.keys.clone(),
        key.clone(),
        key_ring::REFRESH_INTERVAL,
    );
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| ServeError::Listen {
            listen: listen.clone(),
            source,
        })?;
    let address = listener.local_addr()?;
    if config.tokens.is_empty() {
        if !address.ip().is_loopback() {
            return Err(ServeError::PublicWithoutTokens(address));
        }
        tracing::warn!(
            listen = %address,
            "AUTH IS OFF: no [[tokens]] configured; every caller has every scope. \
             Serving on loopback only."
        );
    }
    for setting in config.inline_secrets() {
        tracing::warn!(
            %setting,
            "a secret is written in lethe.toml itself: name where it is with \
             {setting}_env or {setting}_file instead"
        );
    }
    // Once per gap: a declared store that a completed request may leave holding personal data.
    for gap in crate::app::coverage::coverage(&config).gaps {
        tracing::warn!("coverage gap: {} (lethe coverage)", gap.message());
    }
    let public_url = config
        .engine
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    let requests = database.app(config.clone(), Some(key.clone()));
    let runtime = Runtime::start(
        requests.clone(),
        database.workflow.clone(),
        config,
        key.clone(),
        public_url,
    )?;
    let state = AppState { requests, key };
    tracing::info!(listen = %address, database = %redact(&database_url), "lethe is serving");
    crate::http::serve(listener, router(state), shutdown_signal()).await?;
    runtime.stop().await;
    refresh.abort();
    tracing::info!("lethe stopped");
    Ok(())
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

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://lethe:s3cret@db:5432/lethe"),
            "postgres://lethe:***@db:5432/lethe"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact("sqlite://./lethe-data/lethe.db"),
            "sqlite://./lethe-data/lethe.db"
        );
    }
}
