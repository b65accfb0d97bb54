//! Server configuration (being written).

use std::path::PathBuf;

/// Values given on the `codeq serve` command line; they win over env and file.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--config FILE` (else env `CODEQ_CONFIG`).
    pub config_path: Option<PathBuf>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--storage`.
    pub storage: Option<String>,
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk (fsync, shared by concurrent writes).
    Fsync,
    /// In the OS buffers: survives a process crash, not power loss.
    Buffered,
}
