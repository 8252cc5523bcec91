//! A minimal HTTP/1.1 keep-alive client on hyper's connection API: one TCP
//! connection per worker, driven inside the worker's own task (no extra task
//! per connection), so the client costs as little CPU as possible on a machine
//! it shares with the server it measures.

use std::{net::SocketAddr, pin::Pin, time::Duration};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    body::Bytes,
    client::conn::http1::{self, Connection, SendRequest},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue},
};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// Where requests go: a loopback socket address and the `Host` header.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub authority: HeaderValue,
    /// Bearer token sent with every request, if any.
    pub auth: Option<HeaderValue>,
}

impl Target {
    /// Parses `http://host:port` and refuses anything that is not on this
    /// machine's loopback interface: this tool only ever loads local servers.
    pub async fn resolve(url: &str, token: Option<&str>) -> anyhow::Result<Target> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("bad target URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("target {url:?}: only http:// is supported");
        }
        let host = uri.host().context("target URL has no host")?;
        let port = uri.port_u16().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            bail!(
                "target {url:?} is not a loopback address; loadgen only targets 127.0.0.0/8 or ::1"
            );
        }
        let authority = HeaderValue::from_str(&format!("{host}:{port}"))?;
        Target::new(addrs[0], authority, token)
    }

    pub fn new(
        addr: SocketAddr,
        authority: HeaderValue,
        token: Option<&str>,
    ) -> anyhow::Result<Target> {
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address");
        }
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("the token is not a valid header value")?;
        Ok(Target {
            addr,
            authority,
            auth,
        })
    }

    /// Another loopback server (the baseline), with the same token.
    pub fn at(&self, addr: SocketAddr) -> anyhow::Result<Target> {
        if !addr.ip().is_loopback() {
            bail!("{addr} is not a loopback address");
        }
        Ok(Target {
            addr,
            authority: HeaderValue::from_str(&addr.to_string())?,
            auth: self.auth.clone(),
        })
    }
}

type Driver = Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Driver,
    target: Target,
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    pub async fn open(target: &Target) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
            target: target.clone(),
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<&Bytes>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.target.authority.clone());
        if let Some(auth) = &self.target.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, JSON.clone());
        }
        let request = request.body(Full::new(body.cloned().unwrap_or_default()))?;
        let Conn { sender, driver, .. } = self;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::select! {
            biased;
            result = exchange => result,
            closed = driver.as_mut() => match closed {
                Ok(()) => bail!("the server closed the connection"),
                Err(error) => Err(error.into()),
            },
        }
    }

    /// A JSON call for setting up data: returns status and parsed body.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let (status, bytes) = tokio::time::timeout(
            Duration::from_secs(120),
            self.send(&method, path, body.as_ref()),
        )
        .await
        .with_context(|| format!("{method} {path} timed out"))??;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}
