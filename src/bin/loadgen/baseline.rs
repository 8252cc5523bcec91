//! The baseline: a trivial axum server started by the load generator itself
//! on 127.0.0.1:0, on its own runtime (as many worker threads as the service
//! has by default), answering every POST by echoing its JSON body (201) and
//! every GET with a small JSON object. Running the same request shapes against
//! it in the same run gives the ceiling of this machine for an axum service,
//! so ratios to it are comparable across noisy runs.

use std::{net::SocketAddr, thread::JoinHandle};

use anyhow::Context;
use axum::{
    Router,
    body::Bytes,
    http::{Method, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use tokio::sync::oneshot;

pub struct Baseline {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

async fn handle(method: Method, body: Bytes) -> Response {
    if method == Method::POST {
        (
            StatusCode::CREATED,
            [(CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    } else {
        (
            [(CONTENT_TYPE, "application/json")],
            r#"{"status":"ok","id":"0192f3a0-0000-7000-8000-000000000000"}"#,
        )
            .into_response()
    }
}

impl Baseline {
    pub fn start(threads: usize) -> anyhow::Result<Baseline> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("baseline")
            .enable_all()
            .build()
            .context("cannot build the baseline runtime")?;
        let thread = std::thread::Builder::new()
            .name("baseline-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            eprintln!("baseline: {error}");
                            return;
                        }
                    };
                    let app = Router::new().fallback(handle);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(Baseline {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
