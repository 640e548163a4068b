//! TLS: `--tls-cert` and `--tls-key` make the one listener serve `https://` and
//! `wss://` (rustls; TLS 1.2 and 1.3; ALPN `http/1.1`, since the WebSocket upgrade
//! is HTTP/1.1).
//!
//! The handshake runs in the connection's own task, under the same handshake timeout
//! as the request head, so a client that opens a socket and never says hello holds a
//! descriptor only that long and never blocks the accept loop.

use super::accept::{serve_io, AcceptOptions, Refusal, Slot};
use axum::Router;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Loads the certificate chain and key (PEM) into an acceptor. Errors name the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate (PEM \"BEGIN CERTIFICATE\") in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: no usable private key: {e}", key.display()))?;
    // The provider is named, not taken from the process default, so this cannot
    // depend on which rustls features other crates in the build happen to enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// [`serve_io`] over TLS: the handshake first (bounded by the handshake timeout), then
/// HTTP as usual. A refused connection (`admitted` is `Err`) is refused over TLS too,
/// so the client can read why.
pub async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Result<Slot, Refusal>,
    router: Router,
    options: AcceptOptions,
    shutdown: watch::Receiver<bool>,
) {
    match tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => serve_io(stream, peer, admitted, router, options, shutdown).await,
        Ok(Err(e)) => {
            metrics::counter!("tether_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics::counter!("tether_tls_handshake_failures_total").increment(1);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}
