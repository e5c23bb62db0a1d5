//! The `livechat` binary: reads settings, starts the server, stops it on SIGTERM or SIGINT;
//! `livechat token ...` prints a token instead.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use livechat::Server;
use livechat::auth::{TokenRequest, issue};
use livechat::config::{Command, Config, LogFormat, TokenArgs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Token(args)) = &config.command {
        return print_token(&config, args);
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Everything that can fail is checked before the port is taken and announced.
        let bind = config.bind.clone();
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let server = match Server::start(config).await {
            Ok(server) => server,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let listener = match TcpListener::bind(bind.as_str()).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), %bind, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(address) = listener.local_addr() {
            // Tests and scripts read this line to learn the port when started with port 0.
            tracing::info!("listening on {scheme}://{address}");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        server.serve(listener, shutdown).await;
        ExitCode::SUCCESS
    })
}

/// Logs to stderr, as text or one JSON object per line; the filter was checked with the settings.
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

/// An error and every error that caused it: `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Errors that wrap transparently repeat their cause's text.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn print_token(config: &Config, args: &TokenArgs) -> ExitCode {
    let Some(secret) = config.jwt_secret.as_deref() else {
        eprintln!("livechat token: set LIVECHAT_JWT_SECRET (or --jwt-secret) to sign with");
        return ExitCode::FAILURE;
    };
    if args.ttl.is_zero() {
        eprintln!(
            "livechat token: --ttl must be more than 0 (e.g. 15m, 1h, 7d): a token that expires at once is refused"
        );
        return ExitCode::FAILURE;
    }
    let request = TokenRequest {
        sub: args.sub.clone(),
        name: args.name.clone(),
        rooms: args.rooms.clone(),
        publish: !args.read_only,
        moderate: args.moderate,
        ttl_seconds: i64::try_from(args.ttl.as_secs()).unwrap_or(i64::MAX),
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
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
