//! The `livechat` binary: reads settings, starts the server, stops it on SIGTERM or SIGINT;
//! `livechat token ...` prints a token instead.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use livechat::auth::{TokenRequest, issue};
use livechat::config::{Command, Config, TokenArgs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Token(args)) = &config.command {
        return print_token(&config, args);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(config.bind).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, bind = %config.bind, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(address) = listener.local_addr() {
            // Tests and scripts read this line to learn the port when started with port 0.
            tracing::info!("listening on http://{address}");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match livechat::run(config, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "livechat stopped on an error");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_token(config: &Config, args: &TokenArgs) -> ExitCode {
    let Some(secret) = config.jwt_secret.as_deref() else {
        eprintln!("livechat token: set LIVECHAT_JWT_SECRET (or --jwt-secret) to sign with");
        return ExitCode::FAILURE;
    };
    let request = TokenRequest {
        sub: args.sub.clone(),
        name: args.name.clone(),
        rooms: args.rooms.clone(),
        publish: !args.read_only,
        ttl_seconds: i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX),
    };
    match issue(secret, &request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("livechat token: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}
