//! TLS for canaryd's connections: the crypto provider, the client side of
//! every outbound endpoint ([`ClientTls`]: which roots a server certificate
//! must chain to, and the client certificate for mutual TLS), and the
//! server side of the API ([`ServerTls`]). It reads certificate and key
//! files and checks them; it opens no connection and decides nothing about
//! config syntax (`daemon::config`'s `tls` decoder reads the keys).
//!
//! Decisions, and why:
//! - **Crypto: rustls with aws-lc-rs**, rustls' and reqwest's default: it
//!   offers post-quantum hybrid key exchange (rustls 0.23.48 deprecated
//!   `ring`'s provider for lacking it), and with it a plain
//!   `reqwest::Client::new()` anywhere in the code works (reqwest's
//!   provider-less build panics in every client built before a provider
//!   is installed). The cost is its C build (README, dependency notes).
//! - **Roots:** without `caFile`, the system's (rustls-platform-verifier:
//!   the distribution's bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured).
//!   With `caFile`, *only* the certificates in it, as curl's `--cacert`,
//!   Prometheus' `ca_file` and kubeconfig's `certificate-authority` do: a
//!   private CA pins the endpoint to that CA, and a public CA cannot stand
//!   in for it.
//! - **Files are re-read** each time a client is built (per source, per
//!   webhook call), so a rotated certificate is used without a restart;
//!   [`ClientTls::new`] reads them once to refuse broken files at config
//!   time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_platform_verifier::BuilderVerifierExt;

/// A certificate or key file larger than this is not one (a mistyped path
/// to a log or a device must not be read whole).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A TLS file that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: more than {MAX_PEM_BYTES} bytes; not a PEM certificate or key file")]
    TooLarge { path: PathBuf },
    #[error(
        "{path}: not PEM (no `-----BEGIN` line; a DER file converts with `openssl x509 -inform der -in FILE`)"
    )]
    NotPem { path: PathBuf },
    #[error("{path}: broken PEM: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("{path}: no certificate in it (expected a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate {number} is not a usable X.509 certificate: {detail}")]
    BadCertificate {
        path: PathBuf,
        /// 1-based, in file order.
        number: usize,
        detail: String,
    },
    #[error(
        "{path}: no private key in it (expected an unencrypted PKCS#8, RSA or EC key; encrypted keys are not supported)"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: {count} private keys in it; expected one")]
    ManyKeys { path: PathBuf, count: usize },
    #[error("{path}: the private key cannot be used: {detail}")]
    BadKey { path: PathBuf, detail: String },
    #[error("{key}: the private key does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {detail}")]
    Setup { detail: String },
}

/// The provider every config here is built with (not the process default,
/// which a library in the same process could change).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// One endpoint's client-side TLS settings (`caFile`, `clientCert`,
/// `clientKey` beside its `url`). The default trusts the system roots and
/// presents no client certificate.
///
/// Serialized (with the endpoint's config, e.g. a router's) as the paths
/// only; an endpoint field holding it is `#[serde(default, skip_serializing_if
/// = "ClientTls::is_default")]`, so configs stored before TLS still read.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<ClientIdentity>,
}

/// The client certificate (chain) and its key, for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientTls {
    /// Settings whose files are read and checked now: `ca_file` holds at
    /// least one certificate, the identity's certificate parses and its key
    /// matches it.
    pub fn new(
        ca_file: Option<PathBuf>,
        identity: Option<ClientIdentity>,
    ) -> Result<ClientTls, TlsError> {
        let tls = ClientTls { ca_file, identity };
        tls.rustls_config()?;
        Ok(tls)
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.as_ref()
    }

    /// Whether anything differs from the default (system roots, no client
    /// certificate).
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.identity.is_some()
    }

    /// The system roots and no client certificate.
    pub fn is_default(&self) -> bool {
        !self.is_configured()
    }

    /// A rustls client config from the files as they are now.
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(setup)?;
        let builder = match &self.ca_file {
            Some(path) => builder.with_root_certificates(load_roots(path, &provider)?),
            None => builder.with_platform_verifier().map_err(setup)?,
        };
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some(identity) => {
                let (certs, key) = load_certified_key(&identity.cert, &identity.key, &provider)?;
                builder.with_client_auth_cert(certs, key).map_err(setup)
            }
        }
    }

    /// These settings applied to a reqwest builder: they replace its TLS
    /// configuration whole (roots, client certificate, versions).
    pub fn apply(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        Ok(builder.tls_backend_preconfigured(self.rustls_config()?))
    }

    /// `reqwest::Client::builder()` with these settings.
    pub fn http_client_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        self.apply(reqwest::Client::builder())
    }
}

/// The API's TLS: a certificate chain and its key, checked and ready for
/// the listener. Loading again (on SIGHUP) and swapping the acceptor
/// follows a renewed certificate.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads `cert` (the server certificate first, then any intermediates)
    /// and `key`, and checks that they belong together. Offers HTTP/1.1.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let (certs, key_der) = load_certified_key(cert, key, &provider)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| key_error(cert, key, e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The acceptor that turns an accepted TCP stream into a TLS stream.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

fn setup(e: rustls::Error) -> TlsError {
    TlsError::Setup {
        detail: e.to_string(),
    }
}

fn key_error(cert: &Path, key: &Path, e: rustls::Error) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        other => TlsError::BadKey {
            path: key.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// The PEM sections of `path`, in file order (labels canaryd does not know
/// are skipped).
fn read_pem(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let read_error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_owned(),
        });
    }
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            path: path.to_owned(),
        });
    }
    <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            detail: e.to_string(),
        })
}

/// The certificates of `path`, each parsed as X.509; at least one.
fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = read_pem(path)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        rustls::server::ParsedCertificate::try_from(cert).map_err(|e| {
            TlsError::BadCertificate {
                path: path.to_owned(),
                number: i + 1,
                detail: e.to_string(),
            }
        })?;
    }
    Ok(certs)
}

/// `caFile`'s certificates as trust anchors.
fn load_roots(path: &Path, _provider: &CryptoProvider) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in load_certificates(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            number: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The one private key in `path`.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut keys: Vec<PrivateKeyDer<'static>> = read_pem(path)?
        .into_iter()
        .filter_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .collect();
    match keys.len() {
        0 => Err(TlsError::NoKey {
            path: path.to_owned(),
        }),
        1 => Ok(keys.remove(0)),
        count => Err(TlsError::ManyKeys {
            path: path.to_owned(),
            count,
        }),
    }
}

/// A certificate chain and its key, checked to belong together.
fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = load_certificates(cert)?;
    let key_der = load_key(key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| TlsError::BadKey {
            path: key.to_owned(),
            detail: e.to_string(),
        })?;
    rustls::sign::CertifiedKey::new(certs.clone(), signing_key)
        .keys_match()
        .or_else(|e| match e {
            // The key cannot tell its public half: nothing to compare.
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => Ok(()),
            other => Err(key_error(cert, key, other)),
        })?;
    Ok((certs, key_der))
}

/// The test CAs of the integration tests, for the unit tests here and in
/// the config decoder.
#[cfg(test)]
#[path = "../tests/tls_support/ca.rs"]
pub(crate) mod test_ca;

#[cfg(test)]
mod tests {
    use super::test_ca::{TestCa, TlsFiles};
    use super::*;

    fn files() -> (tempfile::TempDir, TlsFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::write(dir.path());
        (dir, files)
    }

    fn identity(cert: &Path, key: &Path) -> Option<ClientIdentity> {
        Some(ClientIdentity {
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// `ClientTls::new`'s error as text, with the temp dir cut out.
    fn client_error(dir: &Path, ca: Option<&Path>, id: Option<(&Path, &Path)>) -> String {
        let err = ClientTls::new(ca.map(Path::to_owned), id.and_then(|(c, k)| identity(c, k)))
            .unwrap_err();
        err.to_string().replace(&format!("{}/", dir.display()), "")
    }

    #[test]
    fn good_files_load() {
        let (_dir, f) = files();
        let tls =
            ClientTls::new(Some(f.ca.clone()), identity(&f.client_cert, &f.client_key)).unwrap();
        assert!(tls.is_configured());
        assert!(!ClientTls::default().is_configured());
        ClientTls::default().rustls_config().unwrap();
        ServerTls::load(&f.server_cert, &f.server_key).unwrap();
    }

    #[test]
    fn each_broken_file_is_named_with_what_is_wrong() {
        let (dir, f) = files();
        let d = dir.path();
        let put = |name: &str, text: &[u8]| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let der = put("der.crt", &[0x30, 0x82, 0x01, 0x0a, 0x02]);
        let key_only = put(
            "key-only.pem",
            std::fs::read(&f.client_key).unwrap().as_slice(),
        );
        let truncated = {
            let text = std::fs::read_to_string(&f.ca).unwrap();
            put("truncated.pem", &text.as_bytes()[..text.len() - 30])
        };
        let garbage = put(
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let two_keys = {
            let other = TestCa::new("x").issue_client("y");
            let text = std::fs::read_to_string(&f.client_key).unwrap() + &other.key_pem;
            put("two-keys.pem", text.as_bytes())
        };
        let missing = d.join("missing.pem");
        let cases: Vec<(String, &str)> = vec![
            (
                client_error(d, Some(&missing), None),
                "missing.pem: cannot read: No such file or directory (os error 2)",
            ),
            (
                client_error(d, Some(&der), None),
                "der.crt: not PEM (no `-----BEGIN` line; a DER file converts with `openssl x509 -inform der -in FILE`)",
            ),
            (
                client_error(d, Some(&key_only), None),
                "key-only.pem: no certificate in it (expected a `-----BEGIN CERTIFICATE-----` block)",
            ),
            (
                client_error(d, Some(&garbage), None),
                "garbage.pem: certificate 1 is not a usable X.509 certificate: invalid peer certificate: BadEncoding",
            ),
            (
                client_error(d, None, Some((&f.client_cert, &f.client_cert))),
                "client.pem: no private key in it (expected an unencrypted PKCS#8, RSA or EC key; encrypted keys are not supported)",
            ),
            (
                client_error(d, None, Some((&f.client_cert, &two_keys))),
                "two-keys.pem: 2 private keys in it; expected one",
            ),
            (
                client_error(d, None, Some((&f.client_cert, &f.server_key))),
                "server-key.pem: the private key does not match the certificate in client.pem",
            ),
        ];
        for (got, want) in &cases {
            assert_eq!(got, want);
        }
        let t = client_error(d, Some(&truncated), None);
        assert!(t.starts_with("truncated.pem: broken PEM: "), "{t}");
        let server = ServerTls::load(&f.server_cert, &f.client_key)
            .unwrap_err()
            .to_string()
            .replace(&format!("{}/", d.display()), "");
        assert_eq!(
            server,
            "client-key.pem: the private key does not match the certificate in server.pem"
        );
    }

    /// A one-request HTTPS server on 127.0.0.1 with `config`; answers `ok`.
    async fn serve_once(
        config: Arc<rustls::ServerConfig>,
    ) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/",
            listener.local_addr().unwrap().port()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = vec![0; 4096];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = tls.shutdown().await;
        });
        (url, task)
    }

    async fn get(tls: &ClientTls, url: &str) -> Result<String, String> {
        let client = tls.http_client_builder().unwrap().build().unwrap();
        match client.get(url).send().await {
            Ok(r) => Ok(r.text().await.unwrap()),
            Err(e) => {
                let mut out = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    out = format!("{out}: {c}");
                    cause = c.source();
                }
                Err(out)
            }
        }
    }

    #[tokio::test]
    async fn the_ca_file_decides_which_servers_are_trusted() {
        let (_dir, f) = files();
        let server = ServerTls::load(&f.server_cert, &f.server_key).unwrap();

        let (url, task) = serve_once(server.config()).await;
        let trusted = ClientTls::new(Some(f.ca.clone()), None).unwrap();
        assert_eq!(get(&trusted, &url).await.unwrap(), "ok");
        task.await.unwrap();

        let (url, task) = serve_once(server.config()).await;
        let wrong = ClientTls::new(Some(f.wrong_ca.clone()), None).unwrap();
        let err = get(&wrong, &url).await.unwrap_err();
        assert!(
            err.contains("invalid peer certificate: UnknownIssuer"),
            "{err}"
        );
        task.await.unwrap();

        // The system roots do not know a test CA either.
        let (url, task) = serve_once(server.config()).await;
        let err = get(&ClientTls::default(), &url).await.unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_certificate_is_presented_for_mutual_tls() {
        let (_dir, f) = files();
        let provider = provider();
        let mut client_roots = rustls::RootCertStore::empty();
        for c in load_certificates(&f.ca).unwrap() {
            client_roots.add(c).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (certs, key) = load_certified_key(&f.server_cert, &f.server_key, &provider).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .unwrap(),
        );

        let (url, task) = serve_once(config.clone()).await;
        let with_cert =
            ClientTls::new(Some(f.ca.clone()), identity(&f.client_cert, &f.client_key)).unwrap();
        assert_eq!(get(&with_cert, &url).await.unwrap(), "ok");
        task.await.unwrap();

        for (name, tls) in [
            (
                "no client certificate",
                ClientTls::new(Some(f.ca.clone()), None).unwrap(),
            ),
            (
                "a certificate from another CA",
                ClientTls::new(
                    Some(f.ca.clone()),
                    identity(&f.stranger_cert, &f.stranger_key),
                )
                .unwrap(),
            ),
        ] {
            let (url, task) = serve_once(config.clone()).await;
            assert!(get(&tls, &url).await.is_err(), "{name} was accepted");
            task.await.unwrap();
        }
    }
}
