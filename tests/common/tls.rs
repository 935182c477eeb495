//! Certificates made at test time (rcgen): a test CA and the certificates it signs, written as
//! PEM files into a directory of their own, removed when the [`TestPki`] is dropped.
#![allow(dead_code)] // each TLS test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

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

/// A certificate (with its chain: leaf, then CA) and its private key, as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// A new CA, in a new directory under the system's temporary directory.
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
            .push(DnType::CommonName, "wsloop test CA");
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
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (from, until) = match validity {
            Validity::Current => (date_time_ymd(2020, 1, 1), date_time_ymd(2099, 1, 1)),
            Validity::Expired => (date_time_ymd(2020, 1, 1), date_time_ymd(2021, 1, 1)),
        };
        params.not_before = from;
        params.not_after = until;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
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
