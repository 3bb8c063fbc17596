//! The `livebase` command: `dev` (the local dev server) and `serve` (the same
//! without dev conveniences), hosting the application compiled in from
//! `functions/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

mod backup;
mod logs;

use clap::{Args, Parser, Subcommand};
use livebase_runtime::email::MailOptions;
use livebase_runtime::scheduler::worker::DEFAULT_MAX_CONCURRENT_JOBS;
use livebase_runtime::scheduler::SchedulerOptions;
use livebase_runtime::server::{serve, ServerOptions};

#[derive(Parser)]
#[command(name = "livebase", version, about = "A self-hosted reactive backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application for local development (data in `.livebase/`).
    Dev(ServeArgs),
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
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Listen port (0 picks a free one and prints it).
    #[arg(long, env = "LIVEBASE_PORT", default_value_t = 3900)]
    port: u16,
    /// Folder for the SQLite file and the email outbox.
    #[arg(long, env = "LIVEBASE_DATA", default_value = ".livebase")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "LIVEBASE_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// SMTP server for outgoing mail, e.g. `smtp://127.0.0.1:2525` (plain
    /// SMTP; TLS is not supported yet); unset writes each mail to the outbox
    /// folder.
    #[arg(long, env = "LIVEBASE_SMTP_URL")]
    smtp: Option<String>,
    /// The `From` of outgoing mail [default: livebase <noreply@localhost>].
    #[arg(long, env = "LIVEBASE_MAIL_FROM")]
    mail_from: Option<String>,
    /// Where links in mails point, e.g. the web app's origin [default: this
    /// server's URL].
    #[arg(long, env = "LIVEBASE_APP_URL")]
    app_url: Option<String>,
    /// Most scheduled jobs running at once.
    #[arg(long, env = "LIVEBASE_MAX_CONCURRENT_JOBS", default_value_t = DEFAULT_MAX_CONCURRENT_JOBS)]
    max_concurrent_jobs: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (args, dev) = match cli.command {
        Command::Dev(a) => (a, true),
        Command::Serve(a) => (a, false),
        Command::Codegen(a) => return codegen(a),
        Command::Export(a) => return backup::export(a),
        Command::Import(a) => return backup::import(a),
    };
    logs::init(dev);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, dev)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn codegen(args: CodegenArgs) -> std::process::ExitCode {
    match livebase_runtime::codegen::write(&livebase_functions::app(), &args.out) {
        Ok(paths) => {
            for path in paths {
                println!("wrote {}", path.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: writing to {}: {e}", args.out.display());
            std::process::ExitCode::FAILURE
        }
    }
}

/// Serves the application; `dev` adds the dashboard.
async fn run(args: ServeArgs, dev: bool) -> Result<(), livebase_runtime::Error> {
    let options = ServerOptions {
        listen: SocketAddr::new(args.host, args.port),
        data_dir: args.data.clone(),
        mail: MailOptions {
            smtp: args.smtp,
            from: args.mail_from,
            app_url: args.app_url,
        },
        scheduler: SchedulerOptions {
            max_concurrent_jobs: args.max_concurrent_jobs,
        },
        dashboard: dev,
        ..ServerOptions::default()
    };
    let signal = shutdown_signal()?;
    let server = serve(livebase_functions::app(), options).await?;
    // Tests and scripts wait for this exact line.
    println!("livebase listening on {}", server.url());
    tracing::info!(data = %args.data.display(), "ready");
    let stop = server.state.shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down");
        let _ = stop.send(());
    });
    server.wait().await;
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
