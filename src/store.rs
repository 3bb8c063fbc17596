//! `--postgres URL` (or `LIVEBASE_POSTGRES_URL`) on `serve`, `dev`, `export`
//! and `import`: which engine holds the documents. Unset, the data folder's
//! SQLite file; set, the PostgreSQL database (its tables created on first
//! start), which then also holds stored files' bytes, so that every node
//! serves them. The data folder keeps what is not in the store either way:
//! the token secret, the outbox (and, without `--postgres`, files' bytes).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use livebase_runtime::server::{Blobs, ClusterOptions, Store};
use livebase_runtime::storage::{BlobStore, DirBlobStore};
use livebase_store_postgres::{PostgresBlobs, PostgresPersistence, DEFAULT_SCHEMA};

#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Store documents in this PostgreSQL database instead of the data
    /// folder's SQLite file: `postgres://user:password@host:5432/db`
    /// (`?sslmode=require` for TLS). Several nodes may share one: the
    /// first is the writer, the others follow it and take over if it goes.
    #[arg(long, env = "LIVEBASE_POSTGRES_URL", hide_env_values = true)]
    postgres: Option<String>,
    /// A PEM file of CA certificates that PostgreSQL's TLS certificate is
    /// checked against, instead of the built-in (Mozilla) roots.
    #[arg(long, env = "LIVEBASE_POSTGRES_CA_FILE", requires = "postgres")]
    postgres_ca_file: Option<PathBuf>,
    /// With --postgres: the `http://host:port` the other nodes reach this
    /// one at to forward writes when it is the writer (default: the address
    /// it listens on).
    #[arg(long, env = "LIVEBASE_NODE_URL", requires = "postgres")]
    node_url: Option<String>,
}

impl StoreArgs {
    /// The variables that give a child process (`check-data`) this store:
    /// set in its environment, not on its command line, where `ps` would
    /// show a password.
    pub fn child_env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = Vec::new();
        if let Some(url) = &self.postgres {
            env.push(("LIVEBASE_POSTGRES_URL", url.into()));
        }
        if let Some(ca) = &self.postgres_ca_file {
            env.push(("LIVEBASE_POSTGRES_CA_FILE", ca.into()));
        }
        env
    }

    /// The PostgreSQL store, if asked for, opened (tables created if
    /// missing), with what to call it in messages.
    pub fn open_postgres(&self) -> Result<Option<PostgresPersistence>, String> {
        let Some(url) = &self.postgres else {
            return Ok(None);
        };
        PostgresPersistence::open_schema(url, DEFAULT_SCHEMA, self.postgres_ca_file.as_deref())
            .map(Some)
            .map_err(|e| format!("opening --postgres: {e}"))
    }

    /// How the PostgreSQL store would be called in messages (without its
    /// password), if one is asked for.
    pub fn describe(&self) -> Option<String> {
        let url = self.postgres.as_ref()?;
        Some(
            livebase_store_postgres::describe_url(url, DEFAULT_SCHEMA)
                .unwrap_or_else(|| "PostgreSQL".into()),
        )
    }

    /// The server's store, where files' bytes live, how to call the store
    /// when it is not the data folder, and, on PostgreSQL, how this node
    /// shares it with others.
    pub fn open(&self) -> Result<Opened, String> {
        Ok(match self.open_postgres()? {
            Some(p) => Opened {
                described: Some(p.describe()),
                blobs: Blobs::Store(Arc::new(PostgresBlobs::new(&p))),
                cluster: Some(ClusterOptions {
                    lease: Arc::new(p.clone()),
                    node_url: self.node_url.clone(),
                }),
                store: Store::Engine(Arc::new(p)),
            },
            None => Opened {
                store: Store::DataFolder,
                blobs: Blobs::DataFolder,
                described: None,
                cluster: None,
            },
        })
    }

    /// Where `export` and `import` find files' bytes: with `--postgres`, in
    /// that database; otherwise in `data`'s `files/`.
    pub fn open_blobs(
        postgres: Option<&PostgresPersistence>,
        data: &std::path::Path,
    ) -> Result<Box<dyn BlobStore>, String> {
        Ok(match postgres {
            Some(p) => Box::new(PostgresBlobs::new(p)),
            None => Box::new(
                DirBlobStore::open(data)
                    .map_err(|e| format!("opening the files of {}: {e}", data.display()))?,
            ),
        })
    }
}

/// What [`StoreArgs::open`] opened for a server.
pub struct Opened {
    pub store: Store,
    pub blobs: Blobs,
    /// How to call the store in messages, when it is not the data folder.
    pub described: Option<String>,
    pub cluster: Option<ClusterOptions>,
}
