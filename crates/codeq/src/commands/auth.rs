//! `codeq init` and `codeq auth set|show|clear`: the profile store.
//!
//! Every command edits the selected profile (`--profile`, `CODEQ_PROFILE`,
//! else `currentProfile`, else `default`) of `~/.codeq/config.yaml`.

use std::io::{self, BufRead as _, Write as _};

use serde_json::json;

use codeq_client::TokenKind;
use codeq_client::iam::{Exchange, Iam};

use crate::cli::{AuthClearArgs, AuthCommand, AuthLoginArgs, AuthSetArgs, GlobalArgs, InitArgs};
use crate::config::{ConfigFile, Profile, Resolved, check_token, config_path, mask};
use crate::exit::{ConfigError, IdentityServiceError};
use crate::output;

/// Runs one `auth` subcommand.
pub fn run(global: &GlobalArgs, command: &AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Login(args) => login(global, args),
        AuthCommand::Set(args) => set(global, args),
        AuthCommand::Show => show(global),
        AuthCommand::Clear(args) => clear(global, *args),
    }
}

/// `codeq init`: fills the selected profile from the flags (and, unless
/// `--no-prompt`, from answers on stdin) and makes it the current one.
/// Without a URL from either, the profile keeps the one in use (a
/// local-mode server's, on whatever port it runs), not the default.
pub fn init(global: &GlobalArgs, args: &InitArgs) -> anyhow::Result<()> {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    let name = file.profile_name(global.profile.as_deref());
    let current_url = Resolved::current_base_url(global, &file);
    let mut profile = file.profiles.get(&name).cloned().unwrap_or_default();
    apply_flags(&mut profile, global);
    if !args.no_prompt {
        prompt_profile(&mut profile, &current_url)?;
    }
    profile.base_url.get_or_insert(current_url);
    profile.check(&name)?;
    file.profiles.insert(name.clone(), profile);
    file.current_profile = Some(name.clone());
    file.save(&path)?;
    errln!("codeq: profile {name:?} written to {}", path.display());
    Ok(())
}

/// Copies what the global flags (or their env vars) set into `profile`.
fn apply_flags(profile: &mut Profile, global: &GlobalArgs) {
    let secret = |s: &Option<crate::cli::Secret>| s.as_ref().map(|s| s.expose().to_owned());
    if let Some(url) = &global.base_url {
        profile.base_url = Some(url.clone());
    }
    if let Some(token) = secret(&global.producer_token) {
        profile.producer_token = Some(token);
    }
    if let Some(token) = secret(&global.worker_token) {
        profile.worker_token = Some(token);
    }
    if global.admin {
        profile.admin = Some(true);
    }
    apply_iam_flags(profile, global);
}

/// Asks for the base URL (offering `current_url`, the one in use) and
/// tokens; an empty answer keeps what is there.
fn prompt_profile(profile: &mut Profile, current_url: &str) -> anyhow::Result<()> {
    if let Some(url) = ask(&format!("Server URL [{current_url}]: "))? {
        profile.base_url = Some(url);
    }
    let keep = |t: &Option<String>| if t.is_some() { "keep current" } else { "none" };
    if let Some(token) = ask(&format!("Producer token [{}]: ", keep(&profile.producer_token)))? {
        profile.producer_token = Some(token);
    }
    if let Some(token) = ask(&format!("Worker token [{}]: ", keep(&profile.worker_token)))? {
        profile.worker_token = Some(token);
    }
    Ok(())
}

/// One line from stdin after a prompt on stderr; `None` for empty or EOF.
fn ask(prompt: &str) -> anyhow::Result<Option<String>> {
    err!("{prompt}");
    io::stderr().flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim();
    Ok((!answer.is_empty()).then(|| answer.to_owned()))
}

/// `codeq auth login`: sign-in and token exchange at the identity service;
/// the access token becomes the profile's producer token, and the identity
/// service's URL and key given by flag or env are kept for next time.
fn login(global: &GlobalArgs, args: &AuthLoginArgs) -> anyhow::Result<()> {
    let resolved = Resolved::load_allowing_a_new_profile(global)?;
    let missing = |what: &str, flag: &str, env: &str| {
        ConfigError::new(format!("no {what}: pass {flag}, set {env} or store it with codeq init"))
    };
    let iam_url = resolved
        .iam_base_url
        .clone()
        .ok_or_else(|| missing("identity service URL", "--iam-base-url", "CODEQ_IAM_BASE_URL"))?;
    let api_key = resolved
        .iam_api_key
        .clone()
        .ok_or_else(|| missing("identity service API key", "--iam-api-key", "CODEQ_IAM_API_KEY"))?;
    let email = match &args.email {
        Some(email) => email.clone(),
        None if args.no_prompt => return Err(ConfigError::new("no --email given").into()),
        None => ask("E-mail: ")?.ok_or_else(|| ConfigError::new("no e-mail given"))?,
    };
    let password = if args.password_stdin || args.no_prompt {
        read_line()?
    } else {
        ask_secret("Password: ")?
    }
    .ok_or_else(|| ConfigError::new("no password given"))?;
    let exchange = Exchange {
        audience: args.audience.clone(),
        scopes: args.scopes.clone(),
        tenant_id: args.tenant_id.clone(),
    };
    let iam = Iam::new(&iam_url, api_key)?;
    let token = super::block_on(iam.login(&email, &password, &exchange))?
        .map_err(|err| IdentityServiceError::new(&iam_url, err))?;
    edit_profile(global, |profile| {
        apply_iam_flags(profile, global);
        profile.producer_token = Some(token);
    })
}

/// Keeps the identity service settings given by flag or env.
fn apply_iam_flags(profile: &mut Profile, global: &GlobalArgs) {
    if let Some(url) = &global.iam_base_url {
        profile.iam_base_url = Some(url.clone());
    }
    if let Some(key) = &global.iam_api_key {
        profile.iam_api_key = Some(key.expose().to_owned());
    }
}

/// Like [`ask`], with terminal echo turned off while the answer is typed
/// (through stty(1): the crate forbids the unsafe termios calls need).
/// When stdin is not a terminal there is nothing to hide.
fn ask_secret(prompt: &str) -> anyhow::Result<Option<String>> {
    use std::io::IsTerminal as _;
    if !io::stdin().is_terminal() {
        return ask(prompt);
    }
    let stty = |mode: &str| {
        std::process::Command::new("stty")
            .arg(mode)
            .stdin(std::process::Stdio::inherit())
            .status()
            .is_ok_and(|s| s.success())
    };
    let hidden = stty("-echo");
    let answer = ask(if hidden { prompt } else { "Password (shown as typed): " });
    if hidden {
        stty("echo");
        errln!("");
    }
    answer
}

/// The first line of stdin, trimmed; `None` when empty.
fn read_line() -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    Ok((!line.is_empty()).then(|| line.to_owned()))
}

fn set(global: &GlobalArgs, args: &AuthSetArgs) -> anyhow::Result<()> {
    for (kind, token) in [(TokenKind::Producer, &args.producer), (TokenKind::Worker, &args.worker)]
    {
        if let Some(token) = token {
            check_token(kind, token.expose(), &format!("from --{kind}"))?;
        }
    }
    edit_profile(global, |profile| {
        if let Some(token) = &args.producer {
            profile.producer_token = Some(token.expose().to_owned());
        }
        if let Some(token) = &args.worker {
            profile.worker_token = Some(token.expose().to_owned());
        }
    })
}

fn clear(global: &GlobalArgs, args: AuthClearArgs) -> anyhow::Result<()> {
    let all = args.all || (!args.producer && !args.worker);
    edit_profile(global, |profile| {
        if all || args.producer {
            profile.producer_token = None;
        }
        if all || args.worker {
            profile.worker_token = None;
        }
    })
}

/// Loads the file, changes the selected profile, saves the file.
fn edit_profile(global: &GlobalArgs, change: impl FnOnce(&mut Profile)) -> anyhow::Result<()> {
    let path = config_path()?;
    let mut file = ConfigFile::load(&path)?;
    let name = file.profile_name(global.profile.as_deref());
    change(file.profiles.entry(name.clone()).or_default());
    file.current_profile.get_or_insert(name.clone());
    file.save(&path)?;
    errln!("codeq: profile {name:?} updated in {}", path.display());
    Ok(())
}

/// `codeq auth show`: the settings a command would use, tokens masked.
fn show(global: &GlobalArgs) -> anyhow::Result<()> {
    let resolved = Resolved::load(global)?;
    let token = |t: &Option<(String, crate::config::Source)>| match t {
        Some((token, source)) => json!({"token": mask(token), "source": source}),
        None => serde_json::Value::Null,
    };
    output::json(&json!({
        "profile": resolved.profile,
        "baseUrl": resolved.base_url,
        "producerToken": token(&resolved.producer_token),
        "workerToken": token(&resolved.worker_token),
        "admin": resolved.admin,
        "iamBaseUrl": resolved.iam_base_url,
        "iamApiKey": resolved.iam_api_key.as_deref().map(mask),
    }))
}
