//! Client configuration (docs/cli.md): profiles in `~/.codeq/config.yaml`,
//! overridden by `CODEQ_*` environment variables and global flags, with a
//! local-mode fallback to a server's `credentials.json`.
//!
//! Precedence, per setting: flag > environment (clap merges those two) >
//! the selected profile > local-mode credentials > default. Each token is
//! resolved on its own: a profile with only a producer token still gets
//! the local worker token, when the local server is the one asked for.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use codeq_client::{Client, TokenKind};
use codeq_server::auth::is_loopback_host;
use codeq_server::auth::local::LocalCredentials;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::cli::{DEFAULT_BASE_URL, GlobalArgs};
use crate::exit::ConfigError;

/// The profile used when neither `--profile` nor `currentProfile` names one.
pub const DEFAULT_PROFILE: &str = "default";
/// Where a local-mode server keeps its data unless `CODEQ_DATA_DIR` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./codeq-data";

/// The contents of `~/.codeq/config.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used without `--profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_profile: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One named set of connection settings.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The server's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Token for producer, read and admin calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_token: Option<String>,
    /// Token for worker calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_token: Option<String>,
    /// Send `X-Role: ADMIN` (honoured by servers with `env: dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<bool>,
    /// Identity service for `auth login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_base_url: Option<String>,
    /// API key of the identity service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_api_key: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |t: &Option<String>| t.as_deref().map(mask);
        f.debug_struct("Profile")
            .field("base_url", &self.base_url)
            .field("producer_token", &hidden(&self.producer_token))
            .field("worker_token", &hidden(&self.worker_token))
            .field("admin", &self.admin)
            .field("iam_base_url", &self.iam_base_url)
            .field("iam_api_key", &hidden(&self.iam_api_key))
            .finish()
    }
}

/// A token as `auth show` prints it: its first four characters at most,
/// and only when at least twelve remain hidden.
pub fn mask(token: &str) -> String {
    let shown: String =
        if token.chars().count() >= 16 { token.chars().take(4).collect() } else { String::new() };
    format!("{shown}****")
}

impl Profile {
    /// Refuses what every later command would fail on (a base URL that is
    /// not an absolute http(s) URL, a token a request header cannot carry)
    /// before it is written; `name` is the profile's.
    pub fn check(&self, name: &str) -> anyhow::Result<()> {
        if let Some(url) = &self.base_url {
            Client::new(url)?;
        }
        if let Some(url) = &self.iam_base_url {
            codeq_client::iam::Iam::new(url, "")?;
        }
        let whose = format!("for profile {name:?}");
        for (kind, token) in
            [(TokenKind::Producer, &self.producer_token), (TokenKind::Worker, &self.worker_token)]
        {
            if let Some(token) = token {
                check_token(kind, token, &whose)?;
            }
        }
        Ok(())
    }
}

/// `$HOME/.codeq/config.yaml`.
pub fn config_path() -> Result<PathBuf, ConfigError> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(Path::new(&home).join(".codeq").join("config.yaml")),
        _ => Err(ConfigError::new("HOME is not set: cannot find ~/.codeq/config.yaml")),
    }
}

impl ConfigFile {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => {
                return Err(err).with_context(|| format!("failed to read {}", path.display()));
            }
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_norway::from_str(&text)
            .map_err(|err| ConfigError::new(format!("{}: {err}", path.display())).into())
    }

    /// Writes the file (mode 0600: it holds tokens) by replacing it whole.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_norway::to_string(self).context("failed to serialize the config")?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        write_private(path, text.as_bytes())
            .with_context(|| format!("failed to write {}", path.display()))
    }

    /// The name of the profile in use: `wanted` (flag or env), else
    /// `currentProfile`, else `default`.
    pub fn profile_name(&self, wanted: Option<&str>) -> String {
        wanted.or(self.current_profile.as_deref()).unwrap_or(DEFAULT_PROFILE).to_owned()
    }
}

/// Writes `bytes` to a sibling temp file created 0600, then renames it over
/// `path`, so a crash leaves the old file or the new one, never half of one.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("yaml.tmp");
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Where a resolved token came from, for `auth show` and for the message
/// of a refused token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// `--producer-token` or `--worker-token`.
    Flag,
    /// `CODEQ_PRODUCER_TOKEN` or `CODEQ_WORKER_TOKEN`.
    Env,
    /// The selected profile.
    Profile,
    /// A local-mode server's `credentials.json`.
    LocalCredentials,
}

/// The settings a command runs with, after every source was consulted.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The profile consulted.
    pub profile: String,
    /// The server.
    pub base_url: String,
    /// Producer token and its origin.
    pub producer_token: Option<(String, Source)>,
    /// Worker token and its origin.
    pub worker_token: Option<(String, Source)>,
    /// Send `X-Role: ADMIN`.
    pub admin: bool,
    /// Identity service.
    pub iam_base_url: Option<String>,
    /// Identity service API key.
    pub iam_api_key: Option<String>,
}

impl Resolved {
    /// Merges flags and environment (`global`), the profile and, for each
    /// token still missing, the local-mode `credentials` if they belong to
    /// the server asked for.
    pub fn merge(
        global: &GlobalArgs,
        file: &ConfigFile,
        credentials: Option<&LocalCredentials>,
    ) -> Self {
        let profile_name = file.profile_name(global.profile.as_deref());
        let empty = Profile::default();
        let profile = file.profiles.get(&profile_name).unwrap_or(&empty);
        let pick = |flag: &Option<crate::cli::Secret>, id: &str, stored: &Option<String>| {
            let given = if global.typed(id) { Source::Flag } else { Source::Env };
            flag.as_ref()
                .map(|t| t.expose().to_owned())
                .filter(|t| !t.is_empty())
                .map(|t| (t, given))
                .or_else(|| stored.clone().filter(|t| !t.is_empty()).map(|t| (t, Source::Profile)))
        };
        let mut producer_token =
            pick(&global.producer_token, "producer_token", &profile.producer_token);
        let mut worker_token = pick(&global.worker_token, "worker_token", &profile.worker_token);
        // An empty flag or variable counts as unset, as the server's do.
        let mut base_url = non_empty(&global.base_url).or_else(|| non_empty(&profile.base_url));
        if let Some(local) = credentials.filter(|c| same_server(base_url.as_deref(), c)) {
            let local_token = |token: &String| Some((token.clone(), Source::LocalCredentials));
            if producer_token.is_none() {
                producer_token = local_token(&local.producer_token);
            }
            if worker_token.is_none() {
                worker_token = local_token(&local.worker_token);
            }
            base_url.get_or_insert_with(|| local.base_url.clone());
        }
        Self {
            profile: profile_name,
            base_url: base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            producer_token,
            worker_token,
            admin: global.admin || profile.admin.unwrap_or(false),
            iam_base_url: non_empty(&global.iam_base_url)
                .or_else(|| non_empty(&profile.iam_base_url)),
            iam_api_key: global
                .iam_api_key
                .as_ref()
                .map(|s| s.expose().to_owned())
                .filter(|key| !key.is_empty())
                .or_else(|| non_empty(&profile.iam_api_key)),
        }
    }

    /// Loads the config file, whose profile named by `--profile` (or
    /// `CODEQ_PROFILE`) must exist, and, when it and the flags leave a
    /// token missing, the local credentials; then merges. An unreadable
    /// credentials file is an error naming it when no token is configured
    /// at all; with a token configured, it is passed over.
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Self> {
        let path = config_path()?;
        let file = ConfigFile::load(&path)?;
        if let Some(name) = global.profile.as_deref() {
            check_profile_exists(&file, name, &path)?;
        }
        Self::load_from(global, &file)
    }

    /// The base URL a command would use now (what `auth show` reports),
    /// for `init` to offer and keep. A credentials file that cannot be
    /// read gives no URL: it is passed over.
    pub fn current_base_url(global: &GlobalArgs, file: &ConfigFile) -> String {
        let credentials = LocalCredentials::load(&local_data_dir()).ok().flatten();
        Self::merge(global, file, credentials.as_ref()).base_url
    }

    /// [`Resolved::load`] for commands that may create the `--profile`
    /// they are given (`auth login`).
    pub fn load_allowing_a_new_profile(global: &GlobalArgs) -> anyhow::Result<Self> {
        Self::load_from(global, &ConfigFile::load(&config_path()?)?)
    }

    /// The credentials are read even when both tokens are configured: they
    /// may still give the base URL.
    fn load_from(global: &GlobalArgs, file: &ConfigFile) -> anyhow::Result<Self> {
        let err = match LocalCredentials::load(&local_data_dir()) {
            Ok(credentials) => return Ok(Self::merge(global, file, credentials.as_ref())),
            Err(err) => err,
        };
        let configured = Self::merge(global, file, None);
        if configured.producer_token.is_some() || configured.worker_token.is_some() {
            return Ok(configured);
        }
        Err(ConfigError::new(local_credentials_error(&err)).into())
    }

    /// Where the token a call of `kind` sends came from, for messages:
    /// `--producer-token`, `CODEQ_WORKER_TOKEN`, `profile "prod" of
    /// ~/.codeq/config.yaml`, `./codeq-data/credentials.json (local mode)`.
    pub fn describe_token(&self, kind: TokenKind) -> Option<String> {
        let (_, source) = self.token(kind)?;
        Some(match source {
            Source::Flag => format!("--{kind}-token"),
            Source::Env => format!("CODEQ_{}_TOKEN", kind.to_string().to_uppercase()),
            Source::Profile => {
                let file = config_path()
                    .map_or_else(|_| "~/.codeq/config.yaml".into(), |p| p.display().to_string());
                format!("profile {:?} of {file}", self.profile)
            }
            Source::LocalCredentials => {
                format!("{} (local mode)", LocalCredentials::path(&local_data_dir()).display())
            }
        })
    }

    /// The token a read (`task get`, `queue inspect`) sends: the producer
    /// token, else the worker token.
    pub fn reader_token(&self) -> TokenKind {
        if self.producer_token.is_some() { TokenKind::Producer } else { TokenKind::Worker }
    }

    /// A client for the resolved server with the resolved tokens; a token
    /// no request could carry is a configuration error naming its source.
    pub fn client(&self) -> anyhow::Result<Client> {
        self.client_with(&[TokenKind::Producer, TokenKind::Worker])
    }

    /// A client with the worker token only, for `worker start`, which
    /// never sends the producer's (a bad one must not stop it).
    pub fn worker_client(&self) -> anyhow::Result<Client> {
        self.client_with(&[TokenKind::Worker])
    }

    fn client_with(&self, kinds: &[TokenKind]) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.base_url)?.with_admin_role(self.admin);
        for kind in kinds {
            self.check_token(*kind)?;
            if let Some((token, _)) = self.token(*kind) {
                client = match kind {
                    TokenKind::Producer => client.with_producer_token(token),
                    TokenKind::Worker => client.with_worker_token(token),
                };
            }
        }
        Ok(client)
    }
}

impl Resolved {
    /// The token of `kind` and where it came from.
    fn token(&self, kind: TokenKind) -> Option<&(String, Source)> {
        match kind {
            TokenKind::Producer => self.producer_token.as_ref(),
            TokenKind::Worker => self.worker_token.as_ref(),
        }
    }

    /// [`check_token`] on the token of `kind`, naming where it came from.
    fn check_token(&self, kind: TokenKind) -> Result<(), ConfigError> {
        match self.token(kind) {
            Some((token, _)) => {
                let source = self.describe_token(kind).unwrap_or_default();
                check_token(kind, token, &format!("from {source}"))
            }
            None => Ok(()),
        }
    }
}

/// Tokens travel in the `Authorization` header: visible ASCII only. A line
/// break copied along with a token is the usual culprit. `whose` says
/// where it is from (`from --worker-token`).
pub fn check_token(kind: TokenKind, token: &str, whose: &str) -> Result<(), ConfigError> {
    if token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Ok(());
    }
    Err(ConfigError::new(format!(
        "the {kind} token {whose} holds a character a request header cannot carry (a line \
         break, a space or a non-ASCII character)"
    )))
}

/// The data directory of a local-mode server on this machine:
/// `CODEQ_DATA_DIR` (as for `codeq serve`) or `./codeq-data`.
pub fn local_data_dir() -> PathBuf {
    std::env::var_os("CODEQ_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from)
}

/// A `--profile` that names no profile of the file is an error (a typo
/// would otherwise run with nothing but the local credentials).
fn check_profile_exists(file: &ConfigFile, name: &str, path: &Path) -> Result<(), ConfigError> {
    if file.profiles.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    Err(ConfigError::new(format!(
        "profile {name:?} does not exist in {} (profiles: {known}); create it with `codeq --profile {name} init`",
        path.display()
    )))
}

fn local_credentials_error(err: &io::Error) -> String {
    if err.kind() == io::ErrorKind::NotADirectory {
        format!(
            "local-mode credentials: data dir {} is not a directory",
            local_data_dir().display()
        )
    } else {
        format!("local-mode credentials: {err}")
    }
}

/// `value` unless it is empty.
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|value| !value.is_empty())
}

/// True when `credentials` belong to the server at `base_url` (any server
/// when none was asked for): same scheme, port and path, and the same
/// host, where every loopback name (`localhost`, `127.0.0.1`, `[::1]`) is
/// one host.
fn same_server(base_url: Option<&str>, credentials: &LocalCredentials) -> bool {
    let Some(asked) = base_url else { return true };
    let (Ok(asked), Ok(local)) = (Url::parse(asked), Url::parse(&credentials.base_url)) else {
        return false;
    };
    let host = |url: &Url| url.host_str().map(str::to_ascii_lowercase);
    let same_host = host(&asked) == host(&local)
        || [&asked, &local].iter().all(|url| url.host_str().is_some_and(is_loopback_host));
    asked.scheme() == local.scheme()
        && asked.port_or_known_default() == local.port_or_known_default()
        && asked.path().trim_end_matches('/') == local.path().trim_end_matches('/')
        && same_host
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::Cli;

    fn global(args: &[&str]) -> GlobalArgs {
        let mut argv = vec!["codeq"];
        argv.extend(args);
        argv.push("version");
        Cli::try_parse_recording_flags(argv).unwrap().global
    }

    fn file_with(profile: &str, p: Profile) -> ConfigFile {
        ConfigFile {
            current_profile: Some(profile.into()),
            profiles: BTreeMap::from([(profile.to_owned(), p)]),
        }
    }

    fn local(base: &str) -> LocalCredentials {
        LocalCredentials {
            base_url: base.into(),
            producer_token: "cqp_local".into(),
            worker_token: "cqw_local".into(),
        }
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_a_configuration_error_naming_its_source() {
        let file = ConfigFile::default();
        let resolved =
            |token: &str| Resolved::merge(&global(&["--worker-token", token]), &file, None);

        let err = resolved("cqw_abc\n").client().unwrap_err();

        assert!(err.is::<ConfigError>(), "{err:#}");
        assert!(err.to_string().contains("the worker token from --worker-token"), "{err:#}");
        assert!(resolved("cqw_abc").client().is_ok());
        let bad_producer = Resolved::merge(
            &global(&["--producer-token", "p\n", "--worker-token", "cqw_abc"]),
            &file,
            None,
        );
        assert!(bad_producer.client().is_err());
        assert!(bad_producer.worker_client().is_ok(), "a runner never sends the producer token");
    }

    #[test]
    fn flags_win_over_the_profile() {
        let file = file_with(
            "dev",
            Profile {
                base_url: Some("http://a:1".into()),
                producer_token: Some("p-file".into()),
                ..Profile::default()
            },
        );

        let resolved = Resolved::merge(&global(&["--producer-token", "p-flag"]), &file, None);

        assert_eq!(resolved.profile, "dev");
        assert_eq!(resolved.base_url, "http://a:1");
        assert_eq!(resolved.producer_token, Some(("p-flag".into(), Source::Flag)));
        assert_eq!(resolved.worker_token, None);
    }

    #[test]
    fn empty_flags_and_variables_count_as_unset() {
        let file = file_with(
            "dev",
            Profile { producer_token: Some("p-file".into()), ..Profile::default() },
        );
        let creds = local("http://127.0.0.1:9000/");

        let resolved = Resolved::merge(
            &global(&["--producer-token", "", "--worker-token", "", "--base-url", ""]),
            &file,
            Some(&creds),
        );

        assert_eq!(resolved.producer_token, Some(("p-file".into(), Source::Profile)));
        assert_eq!(resolved.worker_token, Some(("cqw_local".into(), Source::LocalCredentials)));
        assert_eq!(resolved.base_url, "http://127.0.0.1:9000/");
    }

    #[test]
    fn the_profile_flag_selects_another_profile() {
        let mut file = file_with("dev", Profile::default());
        file.profiles.insert(
            "prod".into(),
            Profile { worker_token: Some("w-prod".into()), ..Profile::default() },
        );

        let resolved = Resolved::merge(&global(&["--profile", "prod"]), &file, None);

        assert_eq!(resolved.profile, "prod");
        assert_eq!(resolved.worker_token, Some(("w-prod".into(), Source::Profile)));
    }

    #[test]
    fn local_credentials_fill_each_missing_token_only_for_their_server() {
        let creds = local("http://127.0.0.1:9000/");
        let none = ConfigFile::default();
        let at = |url: &str, more: &[&str]| {
            let mut args = vec!["--base-url", url];
            args.extend(more);
            Resolved::merge(&global(&args), &none, Some(&creds))
        };

        let implicit = Resolved::merge(&global(&[]), &none, Some(&creds));
        let same = at("http://127.0.0.1:9000", &[]);
        let by_name = at("http://LOCALHOST:9000/", &[]);
        let other_host = at("http://10.0.0.1:9000", &[]);
        let other_port = at("http://localhost:9001", &[]);
        let has_worker = at("http://127.0.0.1:9000", &["--worker-token", "w"]);

        assert_eq!(implicit.base_url, "http://127.0.0.1:9000/");
        assert_eq!(implicit.producer_token.unwrap().1, Source::LocalCredentials);
        assert_eq!(same.worker_token.unwrap().0, "cqw_local");
        assert_eq!(by_name.worker_token.unwrap().0, "cqw_local", "localhost is 127.0.0.1");
        assert_eq!(other_host.producer_token, None);
        assert_eq!(other_port.producer_token, None);
        assert_eq!(has_worker.worker_token, Some(("w".into(), Source::Flag)));
        assert_eq!(has_worker.producer_token.unwrap().0, "cqp_local", "the missing one");
    }

    #[test]
    fn an_unknown_profile_is_an_error_naming_the_known_ones() {
        let file = file_with("dev", Profile::default());

        let unknown = check_profile_exists(&file, "prdo", Path::new("/h/.codeq/config.yaml"));

        let message = unknown.unwrap_err().to_string();
        assert!(message.contains(r#"profile "prdo" does not exist"#), "{message}");
        assert!(message.contains("(profiles: dev)"), "{message}");
        assert!(check_profile_exists(&file, "dev", Path::new("x")).is_ok());
    }

    #[test]
    fn masking_keeps_at_most_a_short_prefix() {
        assert_eq!(mask("cqp_abcdefghijklmnopqrstuvwxyz"), "cqp_****");
        assert_eq!(mask("short-token"), "****");
    }

    #[test]
    fn the_file_round_trips_with_private_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".codeq/config.yaml");
        let file = file_with(
            "default",
            Profile { producer_token: Some("p".into()), admin: Some(true), ..Profile::default() },
        );

        file.save(&path).unwrap();
        let loaded = ConfigFile::load(&path).unwrap();

        assert_eq!(loaded, file);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("currentProfile: default"), "{text}");
        assert!(text.contains("producerToken: p"), "{text}");
    }

    #[test]
    fn an_unknown_key_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        fs::write(&path, "profiles:\n  default:\n    baseURL: http://x\n").unwrap();

        let err = ConfigFile::load(&path).unwrap_err();

        assert_eq!(crate::exit::code_for(&err), crate::exit::CONFIGURATION);
        assert!(format!("{err:#}").contains("baseURL"));
    }
}
