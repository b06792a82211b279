//! Serving the router: one accept loop per bound address (IPv4 and IPv6), plain HTTP or
//! rustls TLS, a bounded number of connections, header and request timeouts. A bind or
//! TLS failure disables only REST, with a log line naming the address and the cause; the
//! peer-to-peer service keeps running.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;

use super::{ClientAddr, RestState, router};
use crate::clock::{Clock, Entropy};
use crate::ports::NodeApi;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("bad certificate or key: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Start the listener on every configured address. Returns the addresses actually bound
/// (port 0 resolved), after logging each failure.
pub async fn spawn<N: NodeApi, C: Clock, E: Entropy>(state: Arc<RestState<N, C, E>>) -> Vec<SocketAddr> {
    let app = router(state.clone());
    let bound = listen(app, &state.cfg.binds, state.cfg.tls.as_ref(), state.cfg.max_connections as usize, "REST").await;
    for local in &bound {
        let scheme = if state.cfg.tls.is_some() { "https" } else { "http" };
        log::info!("REST API listening on {scheme}://{local}/api/v1/");
    }
    bound
}

/// Serve `app` on every address of `binds`, plain or with TLS from `tls` (PEM chain, key),
/// at most `max_connections` at once. Each request carries the client's [`ClientAddr`].
/// Returns the addresses bound; a failure is logged under `what` and leaves the rest running.
pub async fn listen(
    app: axum::Router,
    binds: &[SocketAddr],
    tls: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    max_connections: usize,
    what: &'static str,
) -> Vec<SocketAddr> {
    let tls = match tls {
        None => None,
        Some((cert, key)) => match tls_acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                log::warn!("{what} listener disabled: TLS: {e}");
                return vec![];
            }
        },
    };
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut bound = vec![];
    for addr in binds.iter().copied() {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                log::warn!("{what} listener disabled on {addr}: {e}; the peer-to-peer service keeps running");
                continue;
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        bound.push(local);
        let (app, tls, permits) = (app.clone(), tls.clone(), permits.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        log::debug!("{what} accept on {local}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the connection bound: close at once rather than queue.
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    log::debug!("{what}: refusing a connection from {peer}: too many open");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (app, tls) = (app.clone(), tls.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let svc = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ClientAddr(peer));
                        req
                    });
                    let hyper_svc = TowerToHyperService::new(svc);
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
                    let res = match tls {
                        Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => builder.serve_connection(TokioIo::new(stream), hyper_svc).await,
                            _ => return,
                        },
                        None => builder.serve_connection(TokioIo::new(tcp), hyper_svc).await,
                    };
                    if let Err(e) = res {
                        log::debug!("{what} connection from {peer}: {e}");
                    }
                });
            }
        });
    }
    bound
}
