//! Artifacts attached to results: a `url` is stored as given; inline
//! `contentBase64` bytes are written (and fsynced) under
//! `localArtifactsDir/<taskId>/<name>` before the result is stored, and
//! referenced by their download path.

use std::path::{Path, PathBuf};

use base64::Engine;
use codeq_core::{Artifact, TaskId};
use tokio::io::AsyncWriteExt;

/// An artifact as a worker submits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactUpload {
    /// A plain file name.
    pub name: String,
    /// Where the bytes already are.
    pub url: Option<String>,
    /// The bytes, base64-encoded.
    pub content_base64: Option<String>,
    /// Media type.
    pub content_type: Option<String>,
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A field is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The decoded bytes exceed `maxArtifactBytes` (413).
    #[error("artifact {name:?} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The artifact.
        name: String,
        /// Its decoded size.
        size: usize,
        /// `maxArtifactBytes`.
        limit: usize,
    },
    /// The bytes could not be written (500; 507 when the disk is full).
    #[error("cannot store artifact: {0}")]
    Io(#[from] std::io::Error),
}

/// Where artifact bytes live.
#[derive(Debug, Clone)]
pub struct Artifacts {
    dir: PathBuf,
    public_base_url: String,
    max_bytes: usize,
}

impl Artifacts {
    /// Artifacts under `dir`, linked from `public_base_url` (may be empty).
    pub fn new(dir: PathBuf, public_base_url: Option<String>, max_bytes: usize) -> Self {
        let public_base_url = public_base_url.unwrap_or_default().trim_end_matches('/').to_string();
        Self { dir, public_base_url, max_bytes }
    }

    /// Checks uploads and decodes their bytes, without writing anything.
    pub fn prepare(&self, uploads: Vec<ArtifactUpload>) -> Result<Vec<Prepared>, ArtifactError> {
        uploads.into_iter().map(|upload| self.prepare_one(upload)).collect()
    }

    fn prepare_one(&self, upload: ArtifactUpload) -> Result<Prepared, ArtifactError> {
        check_file_name(&upload.name)?;
        match (upload.url, upload.content_base64) {
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ArtifactError::Invalid(format!(
                        "artifacts[].url of {:?} must be an http(s) URL",
                        upload.name
                    )));
                }
                Ok(Prepared {
                    artifact: Artifact {
                        name: upload.name,
                        url,
                        content_type: upload.content_type,
                    },
                    bytes: None,
                })
            }
            (None, Some(encoded)) => {
                if encoded.len() / 4 * 3 > self.max_bytes + 3 {
                    return Err(ArtifactError::TooLarge {
                        name: upload.name,
                        size: encoded.len() / 4 * 3,
                        limit: self.max_bytes,
                    });
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|_| {
                        ArtifactError::Invalid(format!(
                            "artifacts[].contentBase64 of {:?} is not valid base64",
                            upload.name
                        ))
                    })?;
                if bytes.len() > self.max_bytes {
                    return Err(ArtifactError::TooLarge {
                        name: upload.name,
                        size: bytes.len(),
                        limit: self.max_bytes,
                    });
                }
                let artifact = Artifact {
                    name: upload.name,
                    url: String::new(),
                    content_type: upload.content_type,
                };
                Ok(Prepared { artifact, bytes: Some(bytes) })
            }
            _ => Err(ArtifactError::Invalid(format!(
                "artifact {:?} needs exactly one of url and contentBase64",
                upload.name
            ))),
        }
    }

    /// The directory of the artifacts of `task`'s delivery `attempt`.
    pub fn dir_of(&self, task: TaskId, attempt: u32) -> PathBuf {
        self.dir.join(task.to_string()).join(attempt.to_string())
    }

    /// Writes the inline bytes of the artifacts of `task`'s delivery
    /// `attempt` durably and returns the artifacts as the result record
    /// lists them.
    pub async fn store(
        &self,
        task: TaskId,
        attempt: u32,
        prepared: Vec<Prepared>,
    ) -> Result<Vec<Artifact>, ArtifactError> {
        let mut artifacts = Vec::with_capacity(prepared.len());
        for Prepared { mut artifact, bytes } in prepared {
            if let Some(bytes) = bytes {
                write_durably(&self.dir_of(task, attempt), &artifact.name, &bytes).await?;
                artifact.url = format!(
                    "{}/v1/codeq/tasks/{task}/artifacts/{}",
                    self.public_base_url, artifact.name
                );
            }
            artifacts.push(artifact);
        }
        Ok(artifacts)
    }

    /// Deletes every stored artifact of `task` (retention).
    pub async fn remove_all(&self, task: TaskId) {
        let dir = self.dir.join(task.to_string());
        if let Err(error) = tokio::fs::remove_dir_all(&dir).await
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, task.id = %task, "cannot delete artifacts");
        }
    }
}

/// A checked artifact, with its decoded bytes when given inline.
#[derive(Debug)]
pub struct Prepared {
    artifact: Artifact,
    bytes: Option<Vec<u8>>,
}

impl Prepared {
    /// True when there are bytes to write.
    pub fn has_bytes(&self) -> bool {
        self.bytes.is_some()
    }
}

/// A plain file name: no separators, NUL, `.` or `..`, at most 255 bytes.
fn check_file_name(name: &str) -> Result<(), ArtifactError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(ArtifactError::Invalid(format!("artifacts[].name {name:?} must be a plain file name")))
    }
}

async fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    // A name of its own: `name` may already use all 255 bytes a file
    // name may have, and two uploads may run at once.
    let temporary = dir.join(format!(".partial-{}", TaskId::generate()));
    let mut file = tokio::fs::File::create(&temporary).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    tokio::fs::rename(&temporary, dir.join(name)).await?;
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_must_be_plain() {
        for bad in ["", ".", "..", "a/b", "a\\b", "nul\0", &"x".repeat(256)] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
        for good in ["out.json", "..hidden", "a b.txt", &"x".repeat(255)] {
            assert!(check_file_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn an_artifact_needs_exactly_one_source() {
        let artifacts = Artifacts::new(PathBuf::from("unused"), None, 10);
        let upload = |url: Option<&str>, content: Option<&str>| ArtifactUpload {
            name: "a".into(),
            url: url.map(Into::into),
            content_base64: content.map(Into::into),
            content_type: None,
        };
        assert!(artifacts.prepare(vec![upload(None, None)]).is_err());
        assert!(artifacts.prepare(vec![upload(Some("https://x/a"), Some("YQ=="))]).is_err());
        assert!(artifacts.prepare(vec![upload(Some("ftp://x/a"), None)]).is_err());
        assert!(matches!(
            artifacts.prepare(vec![upload(None, Some("YWFhYWFhYWFhYWFhYWFh"))]),
            Err(ArtifactError::TooLarge { .. })
        ));
        let prepared = artifacts.prepare(vec![upload(None, Some("YQ=="))]).unwrap();
        assert!(prepared[0].has_bytes());
    }
}
