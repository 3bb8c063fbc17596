//! `livebase export FILE` and `livebase import FILE`: the command-line edge
//! of [`livebase_runtime::backup`] — which data folder (and, with
//! `--postgres`, which database), which file, and what to tell the user (the
//! token secret is not in the file). Export from one and import into the
//! other to move a deployment between SQLite and PostgreSQL.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use livebase_runtime::auth::tokens::SECRET_FILE;
use livebase_runtime::backup::{self, BackupError, Summary};
use livebase_runtime::datadir;
use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
use livebase_runtime::store::Persistence;
use livebase_runtime::system::with_system_tables;

use crate::store::StoreArgs;

#[derive(Args)]
pub struct BackupArgs {
    /// The export file (JSON lines); `-` for standard output / input.
    file: PathBuf,
    /// The data folder (its SQLite file and stored files' bytes, unless
    /// --postgres, whose database holds both).
    #[arg(long, env = "LIVEBASE_DATA", default_value = ".livebase")]
    data: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

impl BackupArgs {
    /// What holds the documents, for messages.
    fn source(&self) -> String {
        match &self.store.describe() {
            Some(db) => db.clone(),
            None => self.data.display().to_string(),
        }
    }
}

/// Writes every document of the data folder to the file, from one snapshot
/// (a server may keep running on the folder meanwhile).
pub fn export(args: BackupArgs) -> ExitCode {
    report(run_export(&args).map(|summary| {
        eprintln!("exported {} from {}", describe(&summary), args.source());
        eprintln!(
            "note: the token secret is not in the export; to keep sessions signed in, copy {} along",
            args.data.join(SECRET_FILE).display()
        );
    }))
}

/// Loads an export into a fresh data folder (no documents yet), all or
/// nothing. Stop any server on the folder first.
pub fn import(args: BackupArgs) -> ExitCode {
    report(run_import(&args).map(|summary| {
        eprintln!("imported {} into {}", describe(&summary), args.source());
        if !args.data.join(SECRET_FILE).exists() {
            eprintln!(
                "note: tokens issued before the export work here only with the same secret: \
                 copy the old data folder's {SECRET_FILE} into {} before starting the server",
                args.data.display()
            );
        }
    }))
}

fn run_export(args: &BackupArgs) -> Result<Summary, String> {
    let postgres = args.store.open_postgres()?;
    let store: Box<dyn Persistence> = match &postgres {
        Some(postgres) => Box::new(postgres.clone()),
        None => {
            let db = args.data.join(DATABASE_FILE);
            if !db.exists() {
                return Err(format!(
                    "there is no livebase data in {}",
                    args.data.display()
                ));
            }
            Box::new(SqlitePersistence::open(&db).map_err(|e| e.to_string())?)
        }
    };
    let store = store.as_ref();
    let blobs = StoreArgs::open_blobs(postgres.as_ref(), &args.data)?;
    let blobs = blobs.as_ref();
    if args.file == Path::new("-") {
        let stdout = std::io::stdout();
        return backup::export(store, blobs, &mut stdout.lock()).map_err(|e| e.to_string());
    }
    // Written beside the target and renamed when complete, so a failed
    // export never leaves a truncated file that looks like a backup; private
    // (it holds every password hash) from its first byte.
    let partial = args.file.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let written = datadir::create_private_file(&partial)
        .map_err(BackupError::from)
        .and_then(|file| {
            let mut out = BufWriter::new(file);
            let summary = backup::export(store, blobs, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&partial, &args.file)?;
            Ok(summary)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.map_err(|e| format!("writing {}: {e}", args.file.display()))
}

fn run_import(args: &BackupArgs) -> Result<Summary, String> {
    let mut input: Box<dyn std::io::BufRead> = if args.file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            File::open(&args.file).map_err(|e| format!("opening {}: {e}", args.file.display()))?;
        Box::new(BufReader::new(file))
    };
    // Held until the import is done: no server may open the folder meanwhile.
    let _held = datadir::lock(&args.data).map_err(|e| e.to_string())?;
    let postgres = args.store.open_postgres()?;
    // The writer's lease, held until the import is done (the clones share
    // it): no node may write meanwhile, and the import's commits are fenced
    // by it, as a writer's are.
    if let Some(p) = &postgres {
        match p.try_claim_node() {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "a livebase node is running on {} (it holds the writer's lease): stop \
                     every node before importing",
                    p.describe()
                ))
            }
            Err(e) => return Err(format!("claiming {}: {e}", p.describe())),
        }
    }
    let store: Box<dyn Persistence> = match &postgres {
        Some(postgres) => Box::new(postgres.clone()),
        None => Box::new(
            SqlitePersistence::open(args.data.join(DATABASE_FILE)).map_err(|e| e.to_string())?,
        ),
    };
    let store = store.as_ref();
    let blobs = StoreArgs::open_blobs(postgres.as_ref(), &args.data)?;
    let blobs = blobs.as_ref();
    let mut app = livebase_functions::app();
    app.extend_schema(with_system_tables);
    backup::import(store, blobs, app.schema(), &mut input).map_err(|e| {
        format!(
            "importing {}: {e}; nothing was imported",
            args.file.display()
        )
    })
}

fn describe(summary: &Summary) -> String {
    let tables: Vec<String> = summary
        .tables
        .iter()
        .map(|(table, n)| format!("{table} {n}"))
        .collect();
    format!(
        "{} documents and {} stored files' bytes ({})",
        summary.documents(),
        summary.blobs,
        if tables.is_empty() {
            "no tables".to_string()
        } else {
            tables.join(", ")
        }
    )
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
