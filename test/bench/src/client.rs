//! The load generator's client side: keep-alive HTTP/1.1 connections over TLS with the admin
//! client certificate, and timed phases that drive many of them at once.
//!
//! HTTP/1.1 on purpose: DESIGN.md's upstream figures come from wrk, which speaks HTTP/1.1 with
//! one request in flight per connection; we keep that shape so the numbers compare.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Where the API server is and how to authenticate to it, read from its admin kubeconfig.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    authority: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
}

impl Target {
    /// Reads the server URL, CA and admin client certificate from a kubeconfig written by
    /// `distro server`.
    ///
    /// # Errors
    /// If the file is missing or incomplete, the URL is not `https://<ip>:<port>`, or the
    /// certificates do not load.
    pub fn from_kubeconfig(path: &Path) -> Result<Target> {
        let kc = distro_pki::read_kubeconfig(path)?;
        let (cluster, user) = kc.current(path)?;
        let decode = |field: &Option<String>, what: &str| -> Result<String> {
            let data = field
                .as_deref()
                .ok_or_else(|| anyhow!("{}: no {what}", path.display()))?;
            Ok(distro_pki::Kubeconfig::decode_data(data, path)?)
        };
        let ca_pem = decode(
            &cluster.certificate_authority_data,
            "certificate-authority-data",
        )?;
        let pair = distro_pki::CertKeyPair {
            cert_pem: decode(&user.client_certificate_data, "client-certificate-data")?,
            key_pem: decode(&user.client_key_data, "client-key-data")?,
        };
        let authority = cluster
            .server
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("server URL {:?} is not https", cluster.server))?
            .trim_end_matches('/')
            .to_string();
        let addr: SocketAddr = authority.parse().with_context(|| {
            format!("server URL {:?} is not https://<ip>:<port>", cluster.server)
        })?;
        let mut config = (*distro_pki::client_tls_config(&ca_pem, Some(&pair))?).clone();
        // HTTP/1.1 only, as wrk (see the module docs).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Target {
            addr,
            authority,
            server_name: ServerName::IpAddress(addr.ip().into()),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The server's URL, `https://<ip>:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.authority)
    }

    /// Opens one keep-alive connection (TCP, TLS handshake, HTTP/1.1).
    ///
    /// # Errors
    /// Connection refused, handshake or certificate failures.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (send, conn) = http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        // The connection's driver; it ends when `send` is dropped or the server hangs up.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            authority: self.authority.clone(),
        })
    }
}

/// One keep-alive connection; one request in flight at a time.
pub struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    /// Sends one request (JSON in, JSON out) and reads the whole response body.
    ///
    /// # Errors
    /// Transport failures only; any HTTP status is returned as is.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        self.send.ready().await.context("connection closed")?;
        let resp = self
            .send
            .send_request(req)
            .await
            .context("sending request")?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading response body")?
            .to_bytes();
        Ok((status, body))
    }

    /// [`Conn::request`], failing unless the status is 2xx.
    ///
    /// # Errors
    /// Transport failures, or a non-2xx status with the response body in the message.
    pub async fn expect_ok(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes> {
        let (status, body) = self.request(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }
}

/// The request a phase sends for its `i`-th request (counted over all connections).
pub type MakeRequest = dyn Fn(usize) -> (Method, String, Option<Bytes>) + Send + Sync;

/// When a phase ends.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// After this many requests in total (each request index is sent once).
    Count(usize),
    /// After this long; requests in flight at the deadline still finish and count.
    Time(Duration),
}

/// Latencies and errors of a phase.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Wall time from the first request to the last response (connection set-up excluded).
    pub elapsed: Duration,
    /// Latency of every successful request, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Requests that failed (transport error or non-2xx status).
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Response bytes received by successful requests.
    pub bytes: u64,
}

impl Outcome {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1, nearest rank) of the latencies, or zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies_us, q)
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// The `q` quantile (0..=1, nearest rank) of sorted microsecond samples.
pub fn quantile(sorted_us: &[u32], q: f64) -> Duration {
    if sorted_us.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    Duration::from_micros(u64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]))
}

/// Runs one phase: `tasks` tasks, each driving `conns_per_task` connections concurrently (as
/// wrk's threads do), each connection sending `make(i)` one request at a time until `until`.
///
/// All connections are opened before the clock starts. A connection that fails at the
/// transport level is counted as an error and reopened once per failure; if it cannot be
/// reopened it stops.
///
/// # Errors
/// Only if the connections cannot be opened at the start; request failures are counted in the
/// [`Outcome`].
pub async fn run_phase(
    target: &Target,
    tasks: usize,
    conns_per_task: usize,
    until: Until,
    make: Arc<MakeRequest>,
) -> Result<Outcome> {
    let mut groups = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let conns =
            futures::future::try_join_all((0..conns_per_task).map(|_| target.connect())).await?;
        groups.push(conns);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = match until {
        Until::Time(d) => Some(start + d),
        Until::Count(_) => None,
    };
    let limit = match until {
        Until::Count(n) => n,
        Until::Time(_) => usize::MAX,
    };
    let mut handles = Vec::with_capacity(tasks);
    for conns in groups {
        let (target, next, make) = (target.clone(), next.clone(), make.clone());
        handles.push(tokio::spawn(async move {
            let loops = conns
                .into_iter()
                .map(|conn| drive(conn, &target, &next, limit, deadline, make.as_ref()));
            let mut total = Outcome::default();
            for o in futures::future::join_all(loops).await {
                total.merge(o);
            }
            total
        }));
    }
    let mut outcome = Outcome::default();
    for h in handles {
        outcome.merge(h.await.context("load task panicked")?);
    }
    outcome.elapsed = start.elapsed();
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}

/// One connection's request loop.
async fn drive(
    mut conn: Conn,
    target: &Target,
    next: &AtomicUsize,
    limit: usize,
    deadline: Option<Instant>,
    make: &MakeRequest,
) -> Outcome {
    let mut out = Outcome::default();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= limit {
            break;
        }
        let (method, path, body) = make(i);
        let t0 = Instant::now();
        match conn.request(method, &path, body).await {
            Ok((status, body)) if status.is_success() => {
                let us = t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                out.latencies_us.push(us);
                out.bytes += body.len() as u64;
            }
            Ok((status, body)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("{path}: {status}: {}", String::from_utf8_lossy(&body))
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("{path}: {e:#}"));
                match target.connect().await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
        }
    }
    out
}
