//! The `livebase` command: `dev` (the local dev server, which rebuilds and
//! restarts on save: [`dev`]) and `serve` (without dev conveniences),
//! hosting the application compiled in from `functions/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

mod backup;
mod dev;
mod logs;
mod store;

use clap::{Args, Parser, Subcommand};
use livebase_runtime::email::{DkimOptions, MailOptions};
use livebase_runtime::scheduler::worker::DEFAULT_MAX_CONCURRENT_JOBS;
use livebase_runtime::scheduler::SchedulerOptions;
use livebase_runtime::server::{
    serve, EdgeOptions, ServerOptions, MAX_CALLS_IN_FLIGHT_PER_CALLER, MAX_CONNECTIONS_PER_ADDRESS,
    MAX_CONNECTIONS_PER_USER, MAX_HTTP_CONNECTIONS_PER_ADDRESS,
};

#[derive(Parser)]
#[command(name = "livebase", version, about = "A self-hosted reactive backend")]
// A later flag wins over an earlier one: `dev` passes its own arguments to
// its server child and appends the port it settled on.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application for local development (data in `.livebase/`),
    /// rebuilding and restarting it when its sources change.
    Dev(dev::DevArgs),
    /// The server child of `dev` (`dev`'s options; it stops when its
    /// standard input closes).
    #[command(hide = true)]
    DevServer(dev::DevArgs),
    /// Exits non-zero, naming the offending tables and documents, if stored
    /// documents do not satisfy this build's schema (`dev` asks a new build
    /// before it serves). Reads one snapshot; takes no lock.
    #[command(hide = true)]
    CheckData(CheckDataArgs),
    /// Serve the application.
    Serve(ServeArgs),
    /// Write TypeScript function references (`api.d.ts`, `api.js`) for the
    /// npm `convex` client.
    Codegen(CodegenArgs),
    /// Write every document, system tables included, to FILE (JSON lines),
    /// from one snapshot; a server may keep running. The token secret
    /// (`jwt-secret`) is not included: copy it along to keep sessions.
    Export(backup::BackupArgs),
    /// Load an export into a fresh data folder (it must hold no documents),
    /// all or nothing.
    Import(backup::BackupArgs),
}

#[derive(Args)]
struct CodegenArgs {
    /// Folder to write `api.d.ts` and `api.js` into (created if missing).
    #[arg(long, required_unless_present = "rust")]
    out: Option<PathBuf>,
    /// File to write the Rust module of typed function references into, for
    /// a client on `livebase_sdk`.
    #[arg(long)]
    rust: Option<PathBuf>,
}

#[derive(Args)]
struct CheckDataArgs {
    /// The data folder.
    #[arg(long, env = "LIVEBASE_DATA", default_value = ".livebase")]
    data: PathBuf,
    #[command(flatten)]
    store: store::StoreArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Listen port (0 picks a free one and prints it).
    #[arg(long, env = "LIVEBASE_PORT", default_value_t = 3900)]
    port: u16,
    /// Folder for the SQLite file (unless --postgres), the token secret,
    /// stored files' bytes and the email outbox.
    #[arg(long, env = "LIVEBASE_DATA", default_value = ".livebase")]
    data: PathBuf,
    #[command(flatten)]
    store: store::StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "LIVEBASE_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// SMTP server for outgoing mail: `smtp://127.0.0.1:2525` (plain, for
    /// local sinks), `smtp://user:pass@host:587?tls=required` (STARTTLS),
    /// `smtps://user:pass@host:465` (implicit TLS); unset writes each mail to
    /// the outbox folder.
    #[arg(long, env = "LIVEBASE_SMTP_URL", hide_env_values = true)]
    smtp: Option<String>,
    /// A PEM file of CA certificates to trust for the SMTP server, besides
    /// the built-in (Mozilla) roots.
    #[arg(long, env = "LIVEBASE_SMTP_CA_FILE")]
    smtp_ca_file: Option<PathBuf>,
    /// Sign outgoing mail with DKIM using this private key: RSA in PKCS#1
    /// PEM, or Ed25519 as base64.
    #[arg(long, env = "LIVEBASE_DKIM_KEY")]
    dkim_key: Option<PathBuf>,
    /// The DKIM selector (the key is published at
    /// `<selector>._domainkey.<domain>`) [default: livebase].
    #[arg(long, env = "LIVEBASE_DKIM_SELECTOR", requires = "dkim_key")]
    dkim_selector: Option<String>,
    /// The DKIM signing domain [default: the sender's domain].
    #[arg(long, env = "LIVEBASE_DKIM_DOMAIN", requires = "dkim_key")]
    dkim_domain: Option<String>,
    /// The `From` of outgoing mail [default: livebase <noreply@localhost>].
    #[arg(long, env = "LIVEBASE_MAIL_FROM")]
    mail_from: Option<String>,
    /// Where links in mails point, e.g. the web app's origin [default: this
    /// server's URL].
    #[arg(long, env = "LIVEBASE_APP_URL")]
    app_url: Option<String>,
    /// The origin clients reach this server at, `http(s)://host[:port]` (as
    /// behind a proxy): upload URLs and stored files' URLs are built on it
    /// [default: this server's URL].
    #[arg(long, env = "LIVEBASE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Most scheduled jobs running at once.
    #[arg(long, env = "LIVEBASE_MAX_CONCURRENT_JOBS", default_value_t = DEFAULT_MAX_CONCURRENT_JOBS)]
    max_concurrent_jobs: usize,
    /// Most WebSocket connections from one client address (an IPv4 address or
    /// an IPv6 /64). Raise it when many users share an address (a corporate
    /// NAT) or a proxy that is not on this machine forwards every client.
    #[arg(long, env = "LIVEBASE_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Most HTTP connections from one client address.
    #[arg(long, env = "LIVEBASE_MAX_HTTP_CONNECTIONS_PER_ADDRESS", default_value_t = MAX_HTTP_CONNECTIONS_PER_ADDRESS)]
    max_http_connections_per_address: usize,
    /// Most WebSocket connections signed in as one user.
    #[arg(long, env = "LIVEBASE_MAX_CONNECTIONS_PER_USER", default_value_t = MAX_CONNECTIONS_PER_USER)]
    max_connections_per_user: usize,
    /// Most function calls one user, or one client address calling
    /// anonymously, has in flight at once.
    #[arg(long, env = "LIVEBASE_MAX_CALLS_IN_FLIGHT", default_value_t = MAX_CALLS_IN_FLIGHT_PER_CALLER)]
    max_calls_in_flight: usize,
    /// Largest file the upload endpoint accepts, in bytes (over it: `413`).
    #[arg(long, env = "LIVEBASE_MAX_UPLOAD_BYTES", default_value_t = livebase_runtime::storage::MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (args, mode) = match cli.command {
        Command::Dev(a) if a.no_watch => (a.serve, Mode::Dev),
        Command::Dev(a) => return supervise(a),
        Command::DevServer(a) => (a.serve, Mode::DevChild),
        Command::Serve(a) => (a, Mode::Serve),
        Command::CheckData(a) => return check_data(a),
        Command::Codegen(a) => return codegen(a),
        Command::Export(a) => return backup::export(a),
        Command::Import(a) => return backup::import(a),
    };
    logs::init(mode != Mode::Serve);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, mode)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How `run` serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `serve`.
    Serve,
    /// `dev --no-watch`: with the dashboard, in this process.
    Dev,
    /// The server child of `dev`: with the dashboard, and it stops when its
    /// standard input closes (its supervisor stopped it, or died).
    DevChild,
}

/// `dev`: the supervisor that rebuilds on save.
fn supervise(args: dev::DevArgs) -> std::process::ExitCode {
    logs::init(true);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dev::supervise(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `check-data`: whether the stored documents satisfy this build's schema.
fn check_data(args: CheckDataArgs) -> std::process::ExitCode {
    use livebase_runtime::store::sqlite::{SqlitePersistence, DATABASE_FILE};
    use livebase_runtime::store::Persistence;
    let store: Box<dyn Persistence> = match args.store.open_postgres() {
        Ok(Some(postgres)) => Box::new(postgres),
        Ok(None) => {
            let file = args.data.join(DATABASE_FILE);
            if !file.exists() {
                return std::process::ExitCode::SUCCESS;
            }
            match SqlitePersistence::open(&file) {
                Ok(store) => Box::new(store),
                Err(e) => {
                    eprintln!("error: checking {}: {e}", args.data.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut app = livebase_functions::app();
    app.extend_schema(livebase_runtime::system::with_system_tables);
    let checked = livebase_runtime::schema_check::check_documents(store.as_ref(), app.schema());
    match checked {
        Ok(Ok(_)) => std::process::ExitCode::SUCCESS,
        Ok(Err(mismatch)) => {
            eprintln!("{mismatch}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            let place = args
                .store
                .describe()
                .unwrap_or_else(|| args.data.display().to_string());
            eprintln!("error: checking {place}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn codegen(args: CodegenArgs) -> std::process::ExitCode {
    let app = livebase_functions::app();
    if let Some(out) = &args.out {
        match livebase_runtime::codegen::write(&app, out) {
            Ok(paths) => {
                for path in paths {
                    println!("wrote {}", path.display());
                }
            }
            Err(e) => {
                eprintln!("error: writing to {}: {e}", out.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &args.rust {
        match livebase_runtime::codegen::write_rust(&app, path) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("error: writing {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}

/// Serves the application; `dev` adds the dashboard.
async fn run(args: ServeArgs, mode: Mode) -> Result<(), livebase_runtime::Error> {
    let dev = mode != Mode::Serve;
    for (flag, value) in [
        (
            "--max-connections-per-address",
            args.max_connections_per_address,
        ),
        (
            "--max-http-connections-per-address",
            args.max_http_connections_per_address,
        ),
        ("--max-connections-per-user", args.max_connections_per_user),
        ("--max-calls-in-flight", args.max_calls_in_flight),
    ] {
        if value == 0 {
            return Err(livebase_runtime::Error::invalid(format!(
                "{flag} must be at least 1 (it is 0, which would refuse everyone)"
            )));
        }
    }
    if let Some(raw) = &args.public_url {
        livebase_runtime::storage::parse_public_url(raw)
            .map_err(|e| livebase_runtime::Error::invalid(format!("--public-url: {e}")))?;
    }
    let store::Opened {
        store,
        blobs,
        described,
        cluster,
    } = args
        .store
        .open()
        .map_err(livebase_runtime::Error::invalid)?;
    let options = ServerOptions {
        listen: SocketAddr::new(args.host, args.port),
        data_dir: args.data.clone(),
        store,
        blobs,
        mail: MailOptions {
            smtp: args.smtp,
            smtp_ca_file: args.smtp_ca_file,
            dkim: args.dkim_key.map(|key_file| DkimOptions {
                key_file,
                selector: args.dkim_selector,
                domain: args.dkim_domain,
            }),
            from: args.mail_from,
            app_url: args.app_url,
        },
        public_url: args.public_url,
        scheduler: SchedulerOptions {
            max_concurrent_jobs: args.max_concurrent_jobs,
        },
        dashboard: dev,
        edge: EdgeOptions {
            max_connections_per_address: args.max_connections_per_address,
            max_http_connections_per_address: args.max_http_connections_per_address,
            max_connections_per_user: args.max_connections_per_user,
            max_calls_in_flight_per_caller: args.max_calls_in_flight,
            max_upload_bytes: args.max_upload_bytes,
            ..EdgeOptions::default()
        },
        cluster,
        ..ServerOptions::default()
    };
    let signal = shutdown_signal()?;
    let server = serve(livebase_functions::app(), options).await?;
    // Tests and scripts wait for this exact line.
    println!("livebase listening on {}", server.url());
    tracing::info!(data = %args.data.display(), store = %described.unwrap_or_else(|| "the data folder".into()), "ready");
    let stop = server.state.shutdown.clone();
    if mode == Mode::DevChild {
        // A thread of its own, not the runtime's: a blocking read of stdin
        // would hold up the runtime's shutdown.
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = stop.send(());
        });
    }
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down");
        let _ = stop.send(());
    });
    let stepped_down = server.stepped_down();
    server.wait().await;
    if stepped_down.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(livebase_runtime::Error::internal(
            "this node lost the writer's lease to another node and stopped; \
             start it again to follow the new writer",
        ));
    }
    Ok(())
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that
/// resolves on the first of them. Installing them before the ready line is
/// printed means a signal sent the moment it appears still stops the server
/// cleanly instead of killing it.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, livebase_runtime::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind| {
        signal(kind).map_err(|e| {
            livebase_runtime::Error::internal(format!("installing a signal handler: {e}"))
        })
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
