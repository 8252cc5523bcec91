//! The `reservoir` binary: read the configuration, bind, serve until SIGTERM or
//! Ctrl-C. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use reservoir::{Config, launch, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    return_large_buffers();
    let config = Config::parse();
    telemetry::init(config.log_format);
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, address = %config.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match launch(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "reservoir stopped with an error"
            );
            ExitCode::FAILURE
        }
    }
}

/// Makes freed large buffers go back to the system. glibc serves blocks of
/// 128 KiB and more with mmap, but raises that threshold to the size of each
/// such block freed (up to 32 MiB); after that, the multi-megabyte buffers of
/// large sync batches are carved from its heaps, whose pages it keeps. A
/// 1,000,000-row drain in 4,000-row batches peaked at 69-73 MiB resident with
/// the moving threshold and 53-55 MiB with it fixed at 256 KiB, at the same
/// speed (BENCHMARKS.md). Blocks that large are rare on the request path.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets a parameter of the allocator; it takes no
    // pointers and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (docker stop, systemd).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutdown signal received");
}
