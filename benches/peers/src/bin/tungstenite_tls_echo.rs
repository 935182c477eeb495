//! `tungstenite-tls-echo`: the tokio-tungstenite echo over tokio-rustls (wss://), the peer of
//! `wsloop echo --tls-cert --tls-key` in the TLS benchmark.
//!
//! One thread, as `tungstenite-echo`; rustls with the ring provider, TLS 1.2 and 1.3 and ALPN
//! `http/1.1`, like wsloop's. The TLS handshake and the upgrade are one task per connection.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest message; the same default as wsloop's `echo` (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    let args = wsloop_peers::Args::parse_tls("tungstenite-tls-echo");
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&args)?));
    wsloop_peers::run_tokio_with(args, |listener| serve(listener, acceptor))
}

/// rustls settings from the PEM files of the command line.
fn server_config(args: &wsloop_peers::Args) -> std::io::Result<rustls::ServerConfig> {
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Err(invalid(&"--tls-cert and --tls-key are required"));
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(&e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| invalid(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                wsloop_peers::tungstenite_echo(tls, MAX_MESSAGE).await;
            }
        });
    }
}
