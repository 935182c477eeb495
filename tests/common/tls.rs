//! Certificates made at test time (rcgen): a test CA and the certificates it signs, written as
//! PEM files into a directory of their own, removed when the [`TestPki`] is dropped; rustls
//! clients that trust such a CA; and a TLS terminator in the test process ([`TlsTerminator`])
//! to put in front of a plain wsloop server, as nginx would be.
#![allow(dead_code)] // each TLS test binary uses a different subset

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};

use crate::common::raw::Wire;

/// How long a certificate is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From 2020 to 2099.
    Current,
    /// Ended in 2021.
    Expired,
}

/// A test CA in its own directory; [`TestPki::leaf`] issues server certificates.
pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file): what a client trusts.
    pub ca_cert: PathBuf,
}

/// How a leaf's private key file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY` (PKCS#8), ECDSA P-256.
    Pkcs8,
    /// `RSA PRIVATE KEY` (PKCS#1), RSA 2048.
    Pkcs1Rsa,
    /// `EC PRIVATE KEY` (SEC1), ECDSA P-256.
    Sec1Ec,
}

/// Runs `openssl ARGS -out OUT`; panics with its stderr if it fails.
fn run_openssl(openssl: &Path, args: &[&str], out: &Path) {
    let result = std::process::Command::new(openssl)
        .args(args)
        .arg("-out")
        .arg(out)
        .output()
        .expect("run openssl");
    assert!(
        result.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// A certificate (with its chain: leaf, then CA) and its private key, as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA named after `tag` (two CAs of one tag have one name, but not one key), in a
    /// new directory under the system's temporary directory.
    pub fn new(tag: &str) -> TestPki {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsloop-pki-{tag}-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wsloop test CA {tag}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign the CA");
        let ca_cert = dir.join("ca.pem");
        std::fs::write(&ca_cert, cert.pem()).expect("write ca.pem");
        TestPki {
            dir,
            issuer: Issuer::new(params, key),
            ca_cert,
        }
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA, with
    /// an ECDSA P-256 key in PKCS#8; the certificate file holds the chain (leaf, then CA).
    pub fn leaf(&self, file_stem: &str, names: &[&str], validity: Validity) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        self.leaf_for(file_stem, names, validity, &key)
    }

    /// A current `localhost`/`127.0.0.1` certificate whose key file is in `format`: PKCS#1
    /// (RSA) and SEC1 (EC) keys are made and converted by the `openssl` CLI at `openssl`
    /// (rcgen's ring backend cannot generate RSA keys nor write those formats).
    pub fn leaf_with_key_format(&self, file_stem: &str, format: KeyFormat, openssl: &Path) -> Leaf {
        let names = &["localhost", "127.0.0.1"];
        let pkcs8 = self.dir.join(format!("{file_stem}.p8"));
        let key = match format {
            KeyFormat::Pkcs8 | KeyFormat::Sec1Ec => KeyPair::generate().expect("EC key"),
            KeyFormat::Pkcs1Rsa => {
                let args = [
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ];
                run_openssl(openssl, &args, &pkcs8);
                let pem = std::fs::read_to_string(&pkcs8).expect("read the RSA key");
                KeyPair::from_pem(&pem).expect("RSA key for rcgen")
            }
        };
        let leaf = self.leaf_for(file_stem, names, Validity::Current, &key);
        if format != KeyFormat::Pkcs8 {
            // `-traditional`: "RSA PRIVATE KEY" (PKCS#1) or "EC PRIVATE KEY" (SEC1).
            std::fs::rename(&leaf.key, &pkcs8).expect("move the PKCS#8 key");
            let input = pkcs8.to_string_lossy().into_owned();
            run_openssl(openssl, &["pkey", "-traditional", "-in", &input], &leaf.key);
        }
        leaf
    }

    /// [`leaf`](Self::leaf) for a given key.
    fn leaf_for(&self, file_stem: &str, names: &[&str], validity: Validity, key: &KeyPair) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (from, until) = match validity {
            Validity::Current => (date_time_ymd(2020, 1, 1), date_time_ymd(2099, 1, 1)),
            Validity::Expired => (date_time_ymd(2020, 1, 1), date_time_ymd(2021, 1, 1)),
        };
        params.not_before = from;
        params.not_after = until;
        let cert = params.signed_by(key, &self.issuer).expect("sign the leaf");
        let chain = format!(
            "{}{}",
            cert.pem(),
            std::fs::read_to_string(&self.ca_cert).expect("read ca.pem")
        );
        let leaf = Leaf {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&leaf.cert, chain).expect("write the certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write the key");
        leaf
    }

    /// A self-signed certificate for `names` that is a CA's (basicConstraints CA:TRUE), as
    /// `openssl req -x509` makes by default; not signed by this CA.
    pub fn self_signed_ca(&self, file_stem: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-sign");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file_stem}.pem")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write the key");
        leaf
    }

    /// The usual server certificate: `localhost` and `127.0.0.1`, valid now.
    pub fn localhost(&self) -> Leaf {
        self.leaf("server", &["localhost", "127.0.0.1"], Validity::Current)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3) that trusts only the CA of
/// `ca_cert`, offering ALPN `http/1.1` as browsers do.
pub fn client_config(ca_cert: &Path) -> Arc<ClientConfig> {
    client_config_with(ca_cert, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// [`client_config`] limited to the given protocol versions.
pub fn client_config_with(
    ca_cert: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).expect("open the CA file") {
        roots.add(cert.expect("CA PEM")).expect("trust the CA");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS stream over a TCP connection (the handshake happens at the first read or write).
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Wire for TlsStream {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

/// Wraps a connected socket in TLS for `name` (a DNS name or an IP address) with `config`.
pub fn wrap(tcp: TcpStream, config: &Arc<ClientConfig>, name: &str) -> TlsStream {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let conn = ClientConnection::new(Arc::clone(config), name).expect("client connection");
    StreamOwned::new(conn, tcp)
}

/// Connects to `addr` over TLS as `127.0.0.1`, trusting `ca_cert`, with 5 s waits, and
/// completes the TLS handshake.
pub fn connect(addr: SocketAddr, ca_cert: &Path) -> TlsStream {
    let wait = Duration::from_secs(5);
    let tcp = TcpStream::connect_timeout(&addr, wait).expect("connect");
    tcp.set_read_timeout(Some(wait)).expect("read timeout");
    tcp.set_write_timeout(Some(wait)).expect("write timeout");
    let mut tls = wrap(tcp, &client_config(ca_cert), "127.0.0.1");
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    tls
}

/// Writes `request` over TLS and reads until the server's close_notify; returns the response
/// head and body (see `common::exchange`).
pub fn https_exchange(addr: SocketAddr, ca_cert: &Path, request: &[u8]) -> (String, Vec<u8>) {
    crate::common::exchange(connect(addr, ca_cert), request)
}

/// What a [`TlsTerminator`] saw of one client's TLS handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Done: the name the client asked for (SNI; none for an IP address, RFC 6066 §3) and
    /// the protocol agreed by ALPN.
    Done {
        sni: Option<String>,
        alpn: Option<String>,
    },
    /// The client gave up (refused the certificate) or broke the protocol: rustls's error.
    Failed(String),
}

/// A TLS terminator on 127.0.0.1:0 in this process, in front of a plain `backend` (a wsloop
/// server): what nginx does in production, with a certificate made at test time and
/// nothing to install. One thread per connection relays both ways until either side ends.
pub struct TlsTerminator {
    pub addr: SocketAddr,
    handshakes: Receiver<Handshake>,
}

impl TlsTerminator {
    /// Serves `leaf` (its chain and key) and relays to `backend`.
    pub fn start(leaf: &Leaf, backend: SocketAddr) -> TlsTerminator {
        let chain = CertificateDer::pem_file_iter(&leaf.cert)
            .expect("open the certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse the certificate");
        let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("parse the key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("certificate and key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (tx, handshakes) = mpsc::channel();
        thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(backend)) else {
                    continue;
                };
                let (config, tx) = (Arc::clone(&config), tx.clone());
                thread::spawn(move || relay(client, server, config, &tx));
            }
        });
        TlsTerminator { addr, handshakes }
    }

    /// The next client's handshake, within 10 s.
    pub fn next_handshake(&self) -> Handshake {
        self.handshakes
            .recv_timeout(Duration::from_secs(10))
            .expect("a TLS handshake within 10 s")
    }
}

/// Moves bytes between a TLS client and the plain backend on non-blocking sockets, polling
/// every millisecond while nothing moves (test traffic only). Ends when the backend closes
/// (after a close_notify to the client) or either socket fails.
fn relay(
    mut client: TcpStream,
    mut backend: TcpStream,
    config: Arc<ServerConfig>,
    handshakes: &Sender<Handshake>,
) {
    let mut tls = ServerConnection::new(config).expect("server connection");
    // Bounded anyway: the backend is read only once everything before went to the client.
    tls.set_buffer_limit(None);
    let _ = (client.set_nonblocking(true), backend.set_nonblocking(true));
    let (mut to_backend, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    let (mut reported, mut client_done) = (false, false);
    loop {
        let mut moved = false;
        if !client_done {
            match tls.read_tls(&mut client) {
                Ok(0) if tls.is_handshaking() => {
                    let why = "the client closed the connection during the handshake";
                    let _ = handshakes.send(Handshake::Failed(why.into()));
                    return;
                }
                Ok(0) => {
                    client_done = true;
                    let _ = backend.shutdown(Shutdown::Write);
                }
                Ok(_) => {
                    moved = true;
                    if let Err(e) = tls.process_new_packets() {
                        let _ = tls.write_tls(&mut client);
                        let _ = handshakes.send(Handshake::Failed(e.to_string()));
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if !reported && !tls.is_handshaking() {
            reported = true;
            let _ = handshakes.send(Handshake::Done {
                sni: tls.server_name().map(str::to_owned),
                alpn: tls
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            });
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(n) if n > 0 => to_backend.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        if !to_backend.is_empty() {
            match backend.write(&to_backend) {
                Ok(n) => {
                    to_backend.drain(..n);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        if !tls.is_handshaking() && !tls.wants_write() {
            match backend.read(&mut buf) {
                Ok(0) => {
                    tls.send_close_notify();
                    let _ = client.set_nonblocking(false);
                    while tls.wants_write() && tls.write_tls(&mut client).is_ok() {}
                    return;
                }
                Ok(n) => {
                    tls.writer().write_all(&buf[..n]).expect("unbounded buffer");
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut client) {
                Ok(_) => moved = true,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        if !moved {
            thread::sleep(Duration::from_millis(1));
        }
    }
}
