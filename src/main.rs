//! The `livebase` command: `dev` (the local dev server) and `serve` (the same
//! without dev conveniences), hosting the application compiled in from
//! `functions/`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
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
    /// SMTP server for outgoing mail, e.g. `smtp://127.0.0.1:2525`; unset
    /// writes each mail to the outbox folder.
    #[arg(long, env = "LIVEBASE_SMTP_URL")]
    smtp: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (args, dev) = match cli.command {
        Command::Dev(a) => (a, true),
        Command::Serve(a) => (a, false),
    };
    init_logs(dev);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(dev: bool) {
    let default = if dev {
        "info"
    } else {
        "info,livebase::call=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVEBASE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn run(args: ServeArgs) -> Result<(), livebase_runtime::Error> {
    if args.smtp.is_some() {
        tracing::warn!("--smtp is accepted but email delivery is not built yet");
    }
    let options = ServerOptions {
        listen: SocketAddr::new(args.host, args.port),
        data_dir: args.data.clone(),
    };
    let server = serve(livebase_functions::app(), options).await?;
    // Tests and scripts wait for this exact line.
    println!("livebase listening on {}", server.url());
    tracing::info!(data = %args.data.display(), "ready");
    let stop = server.state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(());
    });
    server.wait().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
