//! Test certificate authorities made in the test (rcgen): a CA, server
//! certificates for `localhost` and `127.0.0.1`, client certificates for
//! mutual TLS, and the files a real server (Prometheus, nginx, Python) and
//! canaryd's config read. Nothing here touches the network.
//!
//! Shared by the TLS integration tests (`mod tls_support;`) and by the unit
//! tests of `src/tls.rs` and the config decoder (through `#[path]`), so all
//! make certificates the same way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority that lives for the test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    /// A new CA whose subject is `CN=<name>`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = common_name(name);
        let key = KeyPair::generate().expect("a key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a self-signed CA"),
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and `127.0.0.1` (and `names`).
    pub fn issue_server(&self, names: &[&str]) -> Issued {
        let mut all = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        all.extend(names.iter().map(|n| n.to_string()));
        let mut params = CertificateParams::new(all).expect("valid names");
        params.distinguished_name = common_name("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    /// A client certificate whose subject is `CN=<name>`.
    pub fn issue_client(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name = common_name(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// The files of one TLS test setup, written into a directory.
pub struct TlsFiles {
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// Another CA, which signed nothing here: the wrong `caFile`.
    pub wrong_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from the wrong CA (refused by a server that
    /// checks client certificates against `ca`).
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TlsFiles {
    /// A fresh CA, a server certificate for localhost/127.0.0.1, a client
    /// certificate, and a wrong CA with its own client, written into `dir`.
    pub fn write(dir: &Path) -> TlsFiles {
        let ca = TestCa::new("canaryd test CA");
        let wrong = TestCa::new("canaryd wrong CA");
        let server = ca.issue_server(&[]);
        let client = ca.issue_client("canaryd");
        let stranger = wrong.issue_client("stranger");
        let put = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a test certificate file");
            path
        };
        TlsFiles {
            dir: dir.to_owned(),
            ca: put("ca.pem", &ca.cert_pem()),
            wrong_ca: put("wrong-ca.pem", &wrong.cert_pem()),
            server_cert: put("server.pem", &server.cert_pem),
            server_key: put("server-key.pem", &server.key_pem),
            client_cert: put("client.pem", &client.cert_pem),
            client_key: put("client-key.pem", &client.key_pem),
            stranger_cert: put("stranger.pem", &stranger.cert_pem),
            stranger_key: put("stranger-key.pem", &stranger.key_pem),
        }
    }
}
