//! In-cluster access, as client-go's `rest.InClusterConfig` finds it: the
//! server from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`,
//! the pod's service account from the directory kubelet mounts
//! ([`SERVICE_ACCOUNT_DIR`]): `token` (a bearer token kubelet rotates;
//! read again on every request, so a rotated one is used at once) and
//! `ca.crt` (the cluster's CA, trusted instead of the system's roots).
//!
//! The directory and the environment are parameters, so the tests lay a
//! service account out in a temp dir; the daemon passes the real ones.

use std::path::{Path, PathBuf};

use super::{ClusterAccess, Credential, KubeError, Pem, has_pem_certificate, read_token_file};

/// Where kubelet mounts a pod's service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The access a pod's service account grants. `env` reads an environment
/// variable (`|k| std::env::var(k).ok()` in the daemon).
pub fn discover(
    service_account_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ClusterAccess, KubeError> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (host, port) = match (
        var("KUBERNETES_SERVICE_HOST"),
        var("KUBERNETES_SERVICE_PORT"),
    ) {
        (Some(h), Some(p)) => (h, p),
        _ => {
            return Err(KubeError::InCluster(
                "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set (is canaryd running in a pod?); outside a cluster use `kubeconfig`".into(),
            ));
        }
    };
    if port.parse::<u16>().is_err() {
        return Err(KubeError::InCluster(format!(
            "KUBERNETES_SERVICE_PORT `{port}` is not a port number"
        )));
    }
    if host.contains(['/', '@', ' ', '[', ']']) {
        return Err(KubeError::InCluster(format!(
            "KUBERNETES_SERVICE_HOST `{host}` is not a host name or address"
        )));
    }
    // An IPv6 address is bracketed in a URL, as Go's net.JoinHostPort does.
    let server = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    let token: PathBuf = service_account_dir.join("token");
    read_token_file(&token).map_err(|e| KubeError::InCluster(e.to_string()))?;
    let ca_path = service_account_dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| {
        KubeError::InCluster(format!(
            "cannot read the cluster CA {}: {e}",
            ca_path.display()
        ))
    })?;
    if !has_pem_certificate(&ca) {
        return Err(KubeError::InCluster(format!(
            "{} holds no PEM certificate",
            ca_path.display()
        )));
    }
    Ok(ClusterAccess {
        server,
        ca: Some(Pem {
            bytes: ca,
            origin: ca_path.display().to_string(),
        }),
        credential: Credential::TokenFile(token),
        origin: format!(
            "in-cluster service account {}",
            service_account_dir.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "sa-token\n").unwrap();
        std::fs::write(
            dir.path().join("ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("namespace"), "prod").unwrap();
        dir
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_service_account_and_the_service_env_make_the_access() {
        let dir = layout();
        let a = discover(
            dir.path(),
            env(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
            ]),
        )
        .unwrap();
        assert_eq!(a.server, "https://10.96.0.1:443");
        assert_eq!(
            a.credential,
            Credential::TokenFile(dir.path().join("token"))
        );
        assert!(a.ca.is_some());
        let a = discover(
            dir.path(),
            env(&[
                ("KUBERNETES_SERVICE_HOST", "fd00::1"),
                ("KUBERNETES_SERVICE_PORT", "6443"),
            ]),
        )
        .unwrap();
        assert_eq!(a.server, "https://[fd00::1]:6443");
    }

    #[test]
    fn outside_a_pod_or_without_the_mount_it_says_why() {
        let dir = layout();
        let e = discover(dir.path(), env(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must both be set"), "{e}");
        let e = discover(
            dir.path(),
            env(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "https"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a port number"), "{e}");
        let ok_env = [
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ];
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let e = discover(dir.path(), env(&ok_env)).unwrap_err().to_string();
        assert!(
            e.contains("cannot read the cluster CA") && e.contains("ca.crt"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("token")).unwrap();
        let e = discover(dir.path(), env(&ok_env)).unwrap_err().to_string();
        assert!(e.contains("token") && e.contains("cannot read it"), "{e}");
    }
}
