//! `file`: atomically writes `{"service","baseline","canary","canary_weight"}`
//! (and `"epoch"`, the writing daemon's lease epoch, with several daemons)
//! to `path` (write a temp file beside it, fsync, rename, fsync the
//! directory), for a router or script that watches the file. Reading back
//! parses the same file, so a reader that rewrote it is what canaryd sees.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use super::{FileConfig, Router, RouterError, Target, Weights};
use crate::policy::Weight;

pub struct FileRouter {
    config: FileConfig,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsFile {
    service: String,
    baseline: String,
    canary: String,
    canary_weight: u8,
    /// The writing daemon's lease epoch, with several daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

impl FileRouter {
    pub fn new(config: FileConfig) -> Self {
        FileRouter { config }
    }

    fn error(&self, detail: String) -> RouterError {
        RouterError::Io {
            router: self.describe(),
            detail,
        }
    }
}

impl Router for FileRouter {
    fn describe(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    fn set_weight<'a>(
        &'a self,
        target: &'a Target,
        weight: Weight,
    ) -> BoxFuture<'a, Result<(), RouterError>> {
        Box::pin(async move {
            let body = WeightsFile {
                service: target.service.clone(),
                baseline: target.baseline.clone(),
                canary: target.canary.clone(),
                canary_weight: weight.percent(),
                epoch: target.epoch,
            };
            let mut bytes = serde_json::to_vec_pretty(&body)
                .map_err(|e| self.error(format!("cannot encode the weights: {e}")))?;
            bytes.push(b'\n');
            let path = self.config.path.clone();
            tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
                .await
                .map_err(|e| self.error(format!("writer task failed: {e}")))?
                .map_err(|e| self.error(e))
        })
    }

    fn read_weights<'a>(&'a self) -> BoxFuture<'a, Result<Option<Weights>, RouterError>> {
        Box::pin(async move {
            let bytes = match tokio::fs::read(&self.config.path).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(self.error(format!("cannot read it: {e}"))),
            };
            let file: WeightsFile =
                serde_json::from_slice(&bytes).map_err(|e| RouterError::Protocol {
                    router: self.describe(),
                    detail: format!(
                        "expected {{\"service\",\"baseline\",\"canary\",\"canary_weight\"}}: {e}"
                    ),
                })?;
            let canary = Weight::new(file.canary_weight).ok_or_else(|| RouterError::Protocol {
                router: self.describe(),
                detail: format!("canary_weight {} is above 100", file.canary_weight),
            })?;
            Ok(Some(Weights { canary }))
        })
    }
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| "the path names no file".to_string())?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write it atomically: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_reads_back_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("split.json");
        let r = FileRouter::new(FileConfig { path: path.clone() });
        assert_eq!(r.read_weights().await.unwrap(), None);
        let t = Target {
            epoch: None,
            service: "checkout".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
        };
        for _ in 0..2 {
            r.set_weight(&t, Weight::new(25).unwrap()).await.unwrap();
            assert_eq!(
                r.read_weights().await.unwrap(),
                Some(Weights {
                    canary: Weight::new(25).unwrap()
                })
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service":"checkout","baseline":"v1","canary":"v2","canary_weight":25})
        );
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_missing_directory_and_a_garbled_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let r = FileRouter::new(FileConfig {
            path: dir.path().join("nope/split.json"),
        });
        let t = Target {
            epoch: None,
            service: "s".into(),
            baseline: "a".into(),
            canary: "b".into(),
        };
        let e = r
            .set_weight(&t, Weight::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot write it atomically"), "{e}");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"canary_weight\": 300}").unwrap();
        let r = FileRouter::new(FileConfig { path });
        let e = r.read_weights().await.unwrap_err().to_string();
        assert!(e.contains("unexpected answer"), "{e}");
    }
}
