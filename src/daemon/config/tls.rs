//! The TLS keys every outbound endpoint takes beside its `url` (PRODUCT.md
//! section 7): `caFile`, `clientCert`, `clientKey`. It reads them from an
//! endpoint's mapping and opens and checks the files at parse time, so
//! `canaryd config check` and startup report an unreadable or broken file
//! at the key's line and column. What the settings mean is `crate::tls`'s.
//!
//! An endpoint uses it in two lines: its mapping allows
//! `[own keys.., TLS_KEYS..]` ([`with_tls_keys`]), and after reading its
//! URLs it calls [`client_tls`] with them.
//!
//! Rules: `clientCert` and `clientKey` come together; `caFile` and
//! `clientCert` are refused when none of the endpoint's URLs is
//! `https://` (on plain HTTP they would do nothing, and a reader of the
//! config would believe the connection verified).

use std::path::{Path as FilePath, PathBuf};

use crate::tls::{ClientIdentity, ClientTls, TlsError};
use crate::yaml::decode::{self, Fields};
use crate::yaml::diag::Sink;

/// The TLS keys, to add to an endpoint mapping's allowed keys.
pub(crate) const TLS_KEYS: [&str; 3] = ["caFile", "clientCert", "clientKey"];

/// `own` followed by [`TLS_KEYS`]: the allowed keys of an endpoint mapping.
pub(crate) fn with_tls_keys(own: &[&'static str]) -> Vec<&'static str> {
    own.iter().chain(TLS_KEYS.iter()).copied().collect()
}

/// The TLS settings of the endpoint mapping `f`, whose URLs are `urls` (as
/// read: `None` for one that was refused, which skips the https check).
/// The files are read and checked now. `None` after reporting.
pub(crate) fn client_tls(
    sink: &mut Sink,
    f: &Fields<'_>,
    urls: &[Option<&str>],
) -> Option<ClientTls> {
    let mut ok = true;
    let mut path_of = |key: &str| -> Option<PathBuf> {
        let node = f.get(key)?;
        let s = decode::string(sink, node, &f.child(key));
        match s {
            Some(s) if !s.trim().is_empty() => Some(PathBuf::from(s)),
            Some(_) => {
                sink.error(node.pos, &f.child(key), "expected a file path");
                ok = false;
                None
            }
            None => {
                ok = false;
                None
            }
        }
    };
    let ca_file = path_of("caFile");
    let client_cert = path_of("clientCert");
    let client_key = path_of("clientKey");
    if !ok {
        return None;
    }

    for (present, missing) in [("clientCert", "clientKey"), ("clientKey", "clientCert")] {
        if f.has(present) && !f.has(missing) {
            sink.error(
                f.get(present).map_or(f.pos, |n| n.pos),
                &f.child(present),
                format!("`{present}` needs `{missing}` beside it (mutual TLS takes both)"),
            );
            ok = false;
        }
    }
    let all_read = urls.iter().all(Option::is_some);
    let any_https = urls.iter().flatten().any(|u| u.starts_with("https://"));
    if all_read && !any_https {
        for key in ["caFile", "clientCert"] {
            if let Some(n) = f.get(key) {
                sink.error(
                    n.pos,
                    &f.child(key),
                    format!(
                        "`{key}` applies to https:// URLs only, and {} http://; use https:// or remove `{key}`",
                        if urls.len() == 1 { "the URL is" } else { "every URL is" }
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }

    let identity = match (client_cert, client_key) {
        (Some(cert), Some(key)) => Some(ClientIdentity { cert, key }),
        _ => None,
    };
    match ClientTls::new(ca_file, identity) {
        Ok(tls) => Some(tls),
        Err(e) => {
            let key = key_naming(f, &e);
            let node_pos = f.get(key).map_or(f.pos, |n| n.pos);
            sink.error(node_pos, &f.child(key), e.to_string());
            None
        }
    }
}

/// Which of the TLS keys names the file `e` is about.
fn key_naming(f: &Fields<'_>, e: &TlsError) -> &'static str {
    let file = error_file(e);
    TLS_KEYS
        .into_iter()
        .find(|key| {
            f.get(key)
                .and_then(|n| match &n.value {
                    crate::yaml::node::Value::Str(s) => Some(FilePath::new(s) == file?),
                    _ => None,
                })
                .unwrap_or(false)
        })
        .unwrap_or("caFile")
}

/// The file an error names (for a mismatch, the key's).
fn error_file(e: &TlsError) -> Option<&FilePath> {
    match e {
        TlsError::Read { path, .. }
        | TlsError::TooLarge { path }
        | TlsError::NotPem { path }
        | TlsError::BadPem { path, .. }
        | TlsError::NoCertificate { path }
        | TlsError::BadCertificate { path, .. }
        | TlsError::NoKey { path }
        | TlsError::ManyKeys { path, .. }
        | TlsError::BadKey { path, .. } => Some(path),
        TlsError::KeyMismatch { key, .. } => Some(key),
        TlsError::Setup { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_config;
    use crate::tls::test_ca::TlsFiles;

    /// Every endpoint that takes the TLS keys, with `{TLS}` where they go
    /// and `{SCHEME}` for its URLs' scheme.
    const ENDPOINTS: &str = r#"
services:
  web:
    router: { webhook: { url: "{SCHEME}://127.0.0.1:9000/w", {TLS} } }
    source: { prometheusQuery: { url: "{SCHEME}://127.0.0.1:9090", signals: { requests: up }, {TLS} } }
    hooks:
      onStart: { webhook: { url: "{SCHEME}://127.0.0.1:9000/h", {TLS} } }
  api:
    source: { prometheusScrape: { baseline: "{SCHEME}://127.0.0.1:9101/metrics", canary: "{SCHEME}://127.0.0.1:9102/metrics", signals: { requests: r }, {TLS} } }
registries:
  - mlflow: { url: "{SCHEME}://127.0.0.1:5000", model: m, alias: a, service: web, policy: p, {TLS} }
"#;

    fn config(scheme: &str, tls: &str) -> String {
        ENDPOINTS.replace("{SCHEME}", scheme).replace("{TLS}", tls)
    }

    #[test]
    fn every_endpoint_reads_its_tls_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = TlsFiles::write(dir.path());
        let tls = format!(
            "caFile: {}, clientCert: {}, clientKey: {}",
            f.ca.display(),
            f.client_cert.display(),
            f.client_key.display()
        );
        let c = parse_config("c.yaml", config("https", &tls).as_bytes()).unwrap();
        let mut seen = Vec::new();
        let web = &c.services["web"];
        if let Some(crate::routers::RouterConfig::Webhook(w)) = &web.router {
            seen.push(w.tls.clone());
        }
        if let Some(crate::sources::SourceConfig::PrometheusQuery(q)) = &web.source {
            seen.push(q.tls.clone());
        }
        if let Some(crate::routers::HookConfig::Webhook(w)) = &web.hooks.on_start {
            seen.push(w.tls.clone());
        }
        if let Some(crate::sources::SourceConfig::PrometheusScrape(s)) = &c.services["api"].source {
            seen.push(s.tls.clone());
        }
        let super::super::RegistryConfig::Mlflow(m) = &c.registries[0];
        seen.push(m.tls.clone());
        assert_eq!(seen.len(), 5);
        for t in seen {
            assert_eq!(t.ca_file(), Some(f.ca.as_path()));
            assert_eq!(t.identity().unwrap().key, f.client_key);
        }
        // Without the keys: the system roots, no client certificate.
        let plain = parse_config(
            "c.yaml",
            config("https", "").replace(", }", " }").as_bytes(),
        );
        let plain = plain.unwrap();
        let super::super::RegistryConfig::Mlflow(m) = &plain.registries[0];
        assert!(!m.tls.is_configured());
    }

    #[test]
    fn broken_tls_settings_are_refused_at_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = TlsFiles::write(dir.path());
        let d = dir.path().display().to_string();
        let check = |scheme: &str, tls: &str| -> String {
            parse_config("c.yaml", config(scheme, tls).as_bytes())
                .unwrap_err()
                .to_string()
                .replace(&format!("{d}/"), "")
        };
        let missing = check("https", &format!("caFile: {d}/nope.pem"));
        for want in [
            "c.yaml:4:67: services.web.router.webhook.caFile: nope.pem: cannot read: No such file or directory",
            "services.web.source.prometheusQuery.caFile: nope.pem: cannot read",
            "services.web.hooks.onStart.webhook.caFile: nope.pem: cannot read",
            "services.api.source.prometheusScrape.caFile: nope.pem: cannot read",
            "registries[0].mlflow.caFile: nope.pem: cannot read",
        ] {
            assert!(missing.contains(want), "missing {want:?} in:\n{missing}");
        }
        let cases = [
            (
                "https",
                format!("clientCert: {}", f.client_cert.display()),
                "services.web.router.webhook.clientCert: `clientCert` needs `clientKey` beside it",
            ),
            (
                "https",
                format!("clientKey: {}", f.client_key.display()),
                "services.web.router.webhook.clientKey: `clientKey` needs `clientCert` beside it",
            ),
            (
                "http",
                format!("caFile: {}", f.ca.display()),
                "services.web.router.webhook.caFile: `caFile` applies to https:// URLs only, and the URL is http://",
            ),
            (
                "http",
                format!("caFile: {}", f.ca.display()),
                "services.api.source.prometheusScrape.caFile: `caFile` applies to https:// URLs only, and every URL is http://",
            ),
            (
                "https",
                format!("caFile: {}", f.client_key.display()),
                "registries[0].mlflow.caFile: client-key.pem: no certificate in it",
            ),
            (
                "https",
                format!(
                    "clientCert: {}, clientKey: {}",
                    f.client_cert.display(),
                    f.server_key.display()
                ),
                "services.web.router.webhook.clientKey: server-key.pem: the private key does not match the certificate in client.pem",
            ),
            (
                "https",
                format!(
                    "clientCert: {}, clientKey: {}",
                    f.client_key.display(),
                    f.client_key.display()
                ),
                "services.web.router.webhook.clientCert: client-key.pem: no certificate in it",
            ),
            (
                "https",
                "caFile: ''".to_owned(),
                "services.web.router.webhook.caFile: expected a file path",
            ),
            (
                "https",
                "caFile: 3".to_owned(),
                "services.web.router.webhook.caFile: expected a string",
            ),
        ];
        for (scheme, tls, want) in cases {
            let got = check(scheme, &tls);
            assert!(got.contains(want), "{tls}: missing {want:?} in:\n{got}");
        }
    }
}
