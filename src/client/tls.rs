//! TLS for `wss://` (feature `tls`, rustls with the ring provider): the client
//! configuration (which CAs are trusted, or none checked with `insecure`), certificate errors
//! said in one line for people, and the blocking TLS stream under a [`Client`](super::Client)
//! split in a read half and a write half. The load generator builds its configuration here too.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ClientConnection;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

use super::transport::{SharedWriter, WriteHalf};
use super::{ClientError, TlsOptions};

/// What `--insecure` prints on standard error, in every program that offers it.
pub const INSECURE_WARNING: &str = "warning: --insecure: the server's certificate is not \
checked; the connection is encrypted but anyone on the way can pose as the server";

/// The rustls client configuration for `options`: TLS 1.2 and 1.3 with rustls's safe
/// defaults, ALPN `http/1.1` (the opening handshake is an HTTP/1.1 request, RFC 6455 §4.1),
/// and the server's certificate checked against the system's CAs, the CAs of
/// `options.ca_file` instead, or not at all with `options.insecure`.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        let roots = match &options.ca_file {
            Some(path) => ca_file_roots(path).map_err(ClientError::Tls)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file (other PEM sections, such as keys, are skipped); an
/// error that names the file when it cannot be read or holds no usable CA certificate.
pub fn ca_file_roots(path: &Path) -> Result<RootCertStore, String> {
    let why = |e: &dyn std::fmt::Display| format!("CA file {}: {e}", path.display());
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| why(&e))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| why(&e))?;
        roots.add(certificate).map_err(|e| why(&e))?;
    }
    if roots.is_empty() {
        return Err(why(&"no PEM certificate in it"));
    }
    Ok(roots)
}

/// The system's trusted CAs (the distribution's bundle, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`); certificates it cannot parse are skipped, as browsers do.
fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let detail = found
            .errors
            .first()
            .map_or(String::new(), |e| format!(" ({e})"));
        return Err(ClientError::Tls(format!(
            "no trusted CA certificates found on this system{detail}: install the CA bundle \
             (ca-certificates) or name a CA file"
        )));
    }
    Ok(roots)
}

/// The name the server's certificate must hold: a DNS name or an IP address (rustls sends
/// SNI for names only, RFC 6066 §3).
pub fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| ClientError::Url(format!("{host:?} is not a host name or IP address")))
}

/// A TLS failure in one line, for people: what was wrong with the server's certificate, or
/// what the server answered; rustls's own words otherwise.
pub fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(e) => describe_certificate(e),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the TLS handshake ({alert:?} alert)")
        }
        // Typically a plain HTTP answer ("HTTP/1.1 400 ...") read as a TLS record.
        rustls::Error::InvalidMessage(_) => {
            format!("the server does not speak TLS here ({error}): a ws:// server?")
        }
        other => other.to_string(),
    }
}

/// [`describe`] for an I/O error that carries a rustls error (as rustls's `io` adapters
/// return them); `None` for other I/O errors.
pub fn tls_error(error: &io::Error) -> Option<String> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(describe(inner))
}

fn describe_certificate(error: &CertificateError) -> String {
    let days =
        |from: &UnixTime, to: &UnixTime| to.as_secs().saturating_sub(from.as_secs()) / 86_400;
    match error {
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired {} days ago",
            days(not_after, time)
        ),
        CertificateError::Expired => "the server's certificate has expired".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid yet (it starts in {} days)",
            days(time, not_before)
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet".into(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<&str> = presented.iter().map(|n| presented_name(n)).collect();
            format!(
                "the server's certificate is not valid for {} (it is for {})",
                expected.to_str(),
                match names.is_empty() {
                    true => "no name".to_owned(),
                    false => names.join(", "),
                }
            )
        }
        CertificateError::NotValidForName => {
            "the server's certificate is not valid for this host name".into()
        }
        CertificateError::UnknownIssuer => "the server's certificate is not signed by a trusted \
            CA (for a private or test CA, trust its certificate as the CA file)"
            .into(),
        CertificateError::BadSignature => "the server's certificate is not signed by the \
            trusted CA of its issuer's name (another CA with the same name?)"
            .into(),
        CertificateError::Other(other) => match other.to_string().as_str() {
            // What `openssl req -x509` makes by default (basicConstraints CA:TRUE).
            "CaUsedAsEndEntity" => "the server's certificate is a CA certificate, which \
                cannot identify a server (self-signed with `openssl req -x509`? sign a server \
                certificate with it instead)"
                .into(),
            why => format!("the server's certificate was refused ({why})"),
        },
        other => format!("the server's certificate was refused ({other})"),
    }
}

/// A name of the certificate as rustls reports it (`DnsName("localhost")`,
/// `IpAddress(127.0.0.1)`) as it was written.
fn presented_name(name: &str) -> &str {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(name)
}

/// `insecure`: any certificate, for any name, is taken as the server's. The handshake's
/// signatures are still checked (the server holds the key of the certificate it showed);
/// only who that is goes unchecked.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Runs the TLS handshake on a connected socket (blocking, within the socket's read
/// timeout) and splits the connection into its halves.
pub(super) fn handshake(
    mut tcp: TcpStream,
    host: &str,
    options: &TlsOptions,
) -> Result<(TlsReader, SharedWriter), ClientError> {
    let mut tls = ClientConnection::new(client_config(options)?, server_name(host)?)
        .map_err(|e| ClientError::Tls(describe(&e)))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(|e| match tls_error(&e) {
            Some(why) => ClientError::Tls(why),
            None if e.kind() == io::ErrorKind::UnexpectedEof => ClientError::Tls(
                "the server closed the connection during the TLS handshake: a ws:// server?".into(),
            ),
            None => ClientError::Io(e),
        })?;
    }
    let tls = Arc::new(Mutex::new(tls));
    let writer = Arc::new(Mutex::new(WriteHalf::Tls(TlsWriter {
        tcp: tcp.try_clone()?,
        tls: Arc::clone(&tls),
        out: Vec::new(),
    })));
    let reader = TlsReader {
        tcp,
        tls,
        writer: Arc::clone(&writer),
        raw: vec![0; RAW_CHUNK].into_boxed_slice(),
        start: 0,
        end: 0,
        eof: false,
    };
    Ok((reader, writer))
}

/// Bytes read from the socket at a time: one TLS record at most (RFC 8446 §5.1).
const RAW_CHUNK: usize = 16 * 1024 + 256;

fn lock(tls: &Mutex<ClientConnection>) -> io::Result<MutexGuard<'_, ClientConnection>> {
    tls.lock()
        .map_err(|_| io::Error::other("TLS state lock poisoned"))
}

/// The read half: waits on the socket without holding the TLS state, so that the write half
/// can encrypt meanwhile, then decrypts under the lock.
pub(super) struct TlsReader {
    tcp: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    /// Records that reading produces (a key update's answer, an alert) go out through the
    /// write half, in order with the frames.
    writer: SharedWriter,
    /// Bytes from the socket not yet given to rustls: `raw[start..end]`.
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    /// The server closed TCP.
    eof: bool,
}

impl TlsReader {
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut tls = lock(&self.tls)?;
            match tls.reader().read(buf) {
                // Ok(0): the server's close_notify.
                Ok(n) => return Ok(n),
                // Nothing decrypted yet: more from the socket below.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.eof => {}
                // TCP closed without a close_notify. Not a truncation the WebSocket layer
                // could miss: a cut frame stays incomplete and a missing close frame shows
                // (RFC 6455 §7.1.5), so this ends the stream like a plain FIN.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.start < self.end {
                let mut raw = &self.raw[self.start..self.end];
                self.start += tls.read_tls(&mut raw)?;
                tls.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let owes = tls.wants_write();
                drop(tls);
                if owes {
                    self.writer
                        .lock()
                        .map_err(|_| io::Error::other("writer lock poisoned"))?
                        .flush()?;
                }
                continue;
            }
            drop(tls);
            let n = self.tcp.read(&mut self.raw)?;
            (self.start, self.end, self.eof) = (0, n, n == 0);
        }
    }
}

/// The write half: encrypts under the lock, writes to the socket after releasing it.
pub(super) struct TlsWriter {
    tcp: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    /// Encrypted records on their way to the socket.
    out: Vec<u8>,
}

impl TlsWriter {
    /// Takes every record rustls has ready (under the lock) and writes them out (without).
    fn send_records(&mut self, plaintext: &[u8]) -> io::Result<usize> {
        let taken = {
            let mut tls = lock(&self.tls)?;
            let taken = match plaintext.is_empty() {
                true => 0,
                false => tls.writer().write(plaintext)?,
            };
            while tls.wants_write() {
                tls.write_tls(&mut self.out)?;
            }
            taken
        };
        let written = self.tcp.write_all(&self.out);
        self.out.clear();
        written.map(|()| taken)
    }
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_records(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_records(&[]).map(|_| ())
    }
}
