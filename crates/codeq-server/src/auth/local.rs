//! Local mode (docs/security.md): when no token source is configured, the server
//! makes a producer token (admin) and a worker token (every command, every
//! scope), keeps them in `<dataDir>/credentials.json` (mode 0600, reused on
//! restart) and listens on loopback only.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;
use serde::{Deserialize, Serialize};

use super::principal::{EventTypes, Principal, PrincipalKind, Scope, Scopes};
use super::static_tokens::{StaticToken, StaticTokenVerifier};

/// The file name of the credentials under the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// `sub` of the local producer token.
pub const LOCAL_PRODUCER_SUB: &str = "local-producer";
/// `sub` of the local worker token.
pub const LOCAL_WORKER_SUB: &str = "local-worker";
/// Prefix of generated producer tokens.
pub const PRODUCER_TOKEN_PREFIX: &str = "cqp_";
/// Prefix of generated worker tokens.
pub const WORKER_TOKEN_PREFIX: &str = "cqw_";

/// Whether [`LocalCredentials::load_or_create`] found the tokens or made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made now: the file did not exist.
    Generated,
    /// Read from the file an earlier start wrote.
    Reused,
}

/// The local-mode tokens and the server they belong to, as stored in
/// `<dataDir>/credentials.json`: `{"baseUrl", "producerToken", "workerToken"}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalCredentials {
    /// The URL the server answers on, for the CLI to match.
    pub base_url: String,
    /// The producer token (admin).
    pub producer_token: String,
    /// The worker token (every command, every worker scope).
    pub worker_token: String,
}

impl LocalCredentials {
    /// Where the credentials of `data_dir` live.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(CREDENTIALS_FILE)
    }

    /// Reads `<data_dir>/credentials.json` if it exists (for the CLI).
    pub fn load(data_dir: &Path) -> io::Result<Option<Self>> {
        let path = Self::path(data_dir);
        match fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes).map(Some).map_err(|e| in_file(&path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(in_file(&path, e)),
        }
    }

    /// Reuses the credentials of `data_dir` (rewriting `baseUrl` when it
    /// changed) or makes new ones, creating `data_dir` if needed.
    ///
    /// The file is written atomically with mode 0600; an existing file
    /// readable by others is narrowed to 0600.
    pub fn load_or_create(data_dir: &Path, base_url: &str) -> io::Result<(Self, Origin)> {
        fs::create_dir_all(data_dir).map_err(|e| in_file(data_dir, e))?;
        let path = Self::path(data_dir);
        match Self::load(data_dir)? {
            Some(mut credentials) => {
                restrict_permissions(&path)?;
                if credentials.base_url != base_url {
                    base_url.clone_into(&mut credentials.base_url);
                    credentials.store(&path)?;
                }
                Ok((credentials, Origin::Reused))
            }
            None => {
                let credentials = Self {
                    base_url: base_url.to_owned(),
                    producer_token: generate_token(PRODUCER_TOKEN_PREFIX)?,
                    worker_token: generate_token(WORKER_TOKEN_PREFIX)?,
                };
                credentials.store(&path)?;
                Ok((credentials, Origin::Generated))
            }
        }
    }

    /// The verifier accepting these tokens: the producer as admin
    /// `local-producer`, the worker as `local-worker` with every command and
    /// every worker scope.
    pub fn verifier(&self) -> StaticTokenVerifier {
        let producer = Principal {
            kind: PrincipalKind::Producer,
            sub: LOCAL_PRODUCER_SUB.to_owned(),
            event_types: EventTypes::All,
            scopes: Scopes::empty().with(Scope::Admin),
            worker_group: None,
            admin: true,
        };
        let worker = Principal {
            kind: PrincipalKind::Worker,
            sub: LOCAL_WORKER_SUB.to_owned(),
            event_types: EventTypes::All,
            scopes: Scopes::all_worker(),
            worker_group: None,
            admin: false,
        };
        // Files are only accepted with two distinct tokens (`parse`), so no
        // duplicate check; were they equal, the token would resolve to the worker.
        StaticTokenVerifier::new_unchecked(vec![
            StaticToken::for_principal(&self.producer_token, producer),
            StaticToken::for_principal(&self.worker_token, worker),
        ])
    }

    fn parse(bytes: &[u8]) -> io::Result<Self> {
        let credentials: Self = serde_json::from_slice(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let usable = |token: &str| !token.is_empty() && !token.contains(char::is_whitespace);
        if !usable(&credentials.producer_token)
            || !usable(&credentials.worker_token)
            || credentials.producer_token == credentials.worker_token
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "producerToken and workerToken must be two different non-empty tokens \
                 (delete the file to generate new ones)",
            ));
        }
        Ok(credentials)
    }

    fn store(&self, path: &Path) -> io::Result<()> {
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        write_private_atomically(path, &json).map_err(|e| in_file(path, e))
    }
}

impl fmt::Debug for LocalCredentials {
    /// Shows only the tokens' prefixes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = |token: &str| format!("{}…", token.get(..4).unwrap_or(""));
        f.debug_struct("LocalCredentials")
            .field("base_url", &self.base_url)
            .field("producer_token", &masked(&self.producer_token))
            .field("worker_token", &masked(&self.worker_token))
            .finish()
    }
}

/// Whether `host` (a `host` config value or a URL host) is a loopback
/// address: `127.0.0.0/8`, `::1` (also bracketed or IPv4-mapped) or
/// `localhost`. Local mode refuses to listen anywhere else.
///
/// `localhost` is trusted by name; a caller that resolves it should also
/// check the bound address with [`IpAddr::is_loopback`].
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// A fresh token: `prefix` + 32 bytes from the OS generator, base64url.
fn generate_token(prefix: &str) -> io::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(io::Error::other)?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new
/// one, never a mix, and no one but the owner can ever read it: a temporary
/// file created with mode 0600 beside it, fsynced, renamed over `path`,
/// then the directory fsynced so the rename survives a crash.
fn write_private_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(CREDENTIALS_FILE);
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));

    let written = (|| {
        let mut options = OpenOptions::new();
        // `create_new` (O_EXCL) neither reuses nor follows an existing path.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Narrows an existing credentials file to mode 0600.
#[cfg(unix)]
fn restrict_permissions(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let mode = fs::metadata(path).map_err(|e| in_file(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "credentials file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| in_file(path, e))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Prefixes an I/O error with the path it concerns.
fn in_file(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn first_start_creates_the_data_dir_and_a_private_credentials_file() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("nested").join("data");

        let (credentials, origin) =
            LocalCredentials::load_or_create(&data_dir, "http://127.0.0.1:8080").unwrap();

        let path = data_dir.join("credentials.json");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["baseUrl"], "http://127.0.0.1:8080");
        assert_eq!(json["producerToken"], credentials.producer_token.as_str());
        assert_eq!(json["workerToken"], credentials.worker_token.as_str());
        assert!(credentials.producer_token.starts_with("cqp_"));
        assert!(credentials.worker_token.starts_with("cqw_"));
        assert_eq!(credentials.producer_token.len(), 4 + 43);
        assert_ne!(credentials.producer_token[4..], credentials.worker_token[4..]);
        assert_eq!(origin, Origin::Generated);
        // Nothing but the file is left behind.
        assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1);
    }

    #[test]
    fn a_restart_reuses_the_same_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) =
            LocalCredentials::load_or_create(dir.path(), "http://127.0.0.1:8080").unwrap();
        let (second, origin) =
            LocalCredentials::load_or_create(dir.path(), "http://127.0.0.1:8080").unwrap();
        assert_eq!(first, second);
        assert_eq!(origin, Origin::Reused);
        assert_eq!(LocalCredentials::load(dir.path()).unwrap(), Some(first));
    }

    #[test]
    fn a_new_base_url_is_written_and_the_tokens_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) =
            LocalCredentials::load_or_create(dir.path(), "http://127.0.0.1:8080").unwrap();
        let (moved, _) =
            LocalCredentials::load_or_create(dir.path(), "http://127.0.0.1:9090").unwrap();
        assert_eq!(moved.base_url, "http://127.0.0.1:9090");
        assert_eq!(
            (&moved.producer_token, &moved.worker_token),
            (&first.producer_token, &first.worker_token)
        );
        assert_eq!(LocalCredentials::load(dir.path()).unwrap(), Some(moved));
        #[cfg(unix)]
        assert_eq!(mode_of(&dir.path().join(CREDENTIALS_FILE)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_readable_by_others_is_narrowed_to_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        LocalCredentials::load_or_create(dir.path(), "u").unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        LocalCredentials::load_or_create(dir.path(), "u").unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CREDENTIALS_FILE);
        for content in [
            "not json",
            r#"{"baseUrl":"u","producerToken":"same","workerToken":"same"}"#,
            r#"{"baseUrl":"u","producerToken":"","workerToken":"w"}"#,
        ] {
            fs::write(&path, content).unwrap();
            let error = LocalCredentials::load_or_create(dir.path(), "u").unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{content}");
            assert!(error.to_string().contains("credentials.json"), "{error}");
        }
    }

    #[test]
    fn load_without_a_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LocalCredentials::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn the_verifier_knows_the_local_producer_and_worker() {
        let dir = tempfile::tempdir().unwrap();
        let (credentials, _) = LocalCredentials::load_or_create(dir.path(), "u").unwrap();
        let verifier = credentials.verifier();

        let producer = verifier.lookup(&credentials.producer_token).unwrap();
        assert_eq!(
            (producer.kind, producer.sub.as_str()),
            (PrincipalKind::Producer, "local-producer")
        );
        assert!(producer.require_admin().is_ok());

        let worker = verifier.lookup(&credentials.worker_token).unwrap();
        assert_eq!((worker.kind, worker.sub.as_str()), (PrincipalKind::Worker, "local-worker"));
        assert_eq!(worker.event_types, EventTypes::All);
        assert_eq!(worker.scopes, Scopes::all_worker());
        assert!(worker.require_producer().is_err());

        assert!(verifier.lookup("cqp_guess").is_none());
    }

    #[test]
    fn debug_output_hides_the_tokens() {
        let credentials = LocalCredentials {
            base_url: "u".into(),
            producer_token: "cqp_secret".into(),
            worker_token: "cqw_secret".into(),
        };
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("cqp_…"), "{debug}");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        let table = [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("localhost", true),
            ("LocalHost", true),
            ("::1", true),
            ("[::1]", true),
            ("::ffff:127.0.0.1", true),
            ("0.0.0.0", false),
            ("::", false),
            ("[::]", false),
            ("10.0.0.1", false),
            ("128.0.0.1", false),
            ("192.168.1.10", false),
            ("example.com", false),
            ("localhost.example.com", false),
            ("", false),
        ];
        for (host, loopback) in table {
            assert_eq!(is_loopback_host(host), loopback, "{host}");
        }
    }
}
