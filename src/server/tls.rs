//! TLS settings of the listeners (feature `tls`): the certificate chain and key read from PEM
//! files, the rustls configuration built on them (TLS 1.2 and 1.3, ALPN `http/1.1`, the ring
//! provider's safe defaults), and the reload that swaps in new files for new connections.
//!
//! The configuration serves whatever [`CertifiedKey`] its store holds at the moment a
//! ClientHello arrives (a `ResolvesServerCert`), so a reload never touches open connections:
//! they keep the keys they agreed on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;

/// Encrypted bytes rustls may hold for one connection (what the socket did not take yet) and
/// plaintext it may buffer before the handshake completes: the loop's outbound queue holds the
/// rest, so this is one vectored write's worth, not a second queue a peer could grow.
const BUFFER_LIMIT: usize = 64 * 1024;

/// Why the certificate or key cannot be used: which file, and what is wrong with it.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// TLS on the listen addresses: the rustls configuration every new connection starts from,
/// and the certificate store a [`reload`](Self::reload) updates. Cloning shares both.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    rustls: Arc<ServerConfig>,
    store: Arc<CertStore>,
}

impl TlsConfig {
    /// Reads the certificate chain (`cert`: PEM, the server's certificate first, then the
    /// intermediates) and its private key (`key`: PEM, PKCS#8, PKCS#1 RSA or SEC1 EC), checks
    /// that they belong together, and builds the configuration.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load(cert, key, &provider)?;
        let store = Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider: Arc::clone(&provider),
            current: RwLock::new(Arc::new(current)),
        });
        let mut rustls = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        // Every response is HTTP/1.1 (the upgrade, the page, the metrics): a client that
        // offers ALPN must be able to agree on it (RFC 7301 §3.2).
        rustls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            rustls: Arc::new(rustls),
            store,
        })
    }

    /// Reads the certificate and key files again and serves them to connections that start
    /// from now on. When they cannot be used, the error says why and the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let store = &self.store;
        let fresh = load(&store.cert, &store.key, &store.provider)?;
        *store
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The server side of a new TLS connection, its buffers bounded.
    pub(crate) fn accept(&self) -> Result<ServerConnection, rustls::Error> {
        let mut session = ServerConnection::new(Arc::clone(&self.rustls))?;
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(session)
    }
}

/// The certificate served to new connections, and the files it came from.
#[derive(Debug)]
struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic elsewhere while holding the lock cannot leave the Arc half-written.
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(Arc::clone(&current))
    }
}

/// The chain and key from their PEM files, checked against each other.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let in_file = |path: &Path, e: &dyn fmt::Display| TlsError(format!("{}: {e}", path.display()));
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| in_file(cert, &pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| in_file(cert, &pem_error(e)))?;
    if chain.is_empty() {
        return Err(in_file(cert, &"no CERTIFICATE section"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => in_file(
            key,
            &"no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)",
        ),
        e => in_file(key, &pem_error(e)),
    })?;
    CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| TlsError(format!("{} with {}: {e}", key.display(), cert.display())))
}

/// A PEM error as a sentence (markers as text, not bytes).
fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: no \"-----END {}-----\" line",
            String::from_utf8_lossy(&end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "not valid PEM: bad line {:?}",
            String::from_utf8_lossy(&line)
        ),
        e => format!("not valid PEM: {e}"),
    }
}
