//! The identity service calls of `codeq auth login` (docs/cli.md): password
//! sign-in for an ID token, then its exchange for a codeQ producer token.

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The audience asked for when none is given.
pub const DEFAULT_AUDIENCE: &str = "codeq-producer";

/// What to exchange the ID token for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exchange {
    /// Audience of the access token (default [`DEFAULT_AUDIENCE`]).
    pub audience: String,
    /// Scopes asked for; left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Tenant, if the identity service has several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// A client of the identity service at `base_url`, authenticated by an
/// API key sent as the `key` query parameter.
#[derive(Clone)]
pub struct Iam {
    http: reqwest::Client,
    base_url: Url,
    api_key: String,
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam").field("base_url", &self.base_url.as_str()).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SignIn<'a> {
    email: &'a str,
    password: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeBody<'a> {
    id_token: &'a str,
    #[serde(flatten)]
    exchange: &'a Exchange,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedIn {
    id_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Exchanged {
    access_token: String,
}

impl Iam {
    /// A client for the identity service at `base_url` with `api_key`.
    pub fn new(base_url: &str, api_key: impl Into<String>) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidBaseUrl { url: base_url.to_owned(), reason };
        let base_url = Url::parse(base_url).map_err(|err| invalid(err.to_string()))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(invalid("it must be an absolute http(s) URL".into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("codeq-client/", env!("CARGO_PKG_VERSION")))
            .timeout(crate::client::DEFAULT_TIMEOUT)
            .build()?;
        Ok(Self { http, base_url, api_key: api_key.into() })
    }

    /// Signs in with a password and exchanges the ID token: the access
    /// token to use as the producer token.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        exchange: &Exchange,
    ) -> Result<String, Error> {
        let signed_in: SignedIn =
            self.post_path(&["signInWithPassword"], &SignIn { email, password }).await?;
        let body = ExchangeBody { id_token: &signed_in.id_token, exchange };
        let exchanged: Exchanged = self.post_path(&["token", "exchange"], &body).await?;
        Ok(exchanged.access_token)
    }

    async fn post_path<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<T, Error> {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.query_pairs_mut().append_pair("key", &self.api_key);
        // The URL carries the API key: keep it out of error messages.
        let hide_key = |err: reqwest::Error| Error::Transport(err.without_url());
        let response = self.http.post(url).json(body).send().await.map_err(hide_key)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(hide_key)?;
        if !(200..300).contains(&status) {
            return Err(Error::from_response_body(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { status, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_exchange_body_carries_the_id_token_and_skips_unset_fields() {
        let exchange = Exchange { audience: DEFAULT_AUDIENCE.into(), ..Exchange::default() };

        let body = serde_json::to_value(ExchangeBody { id_token: "id", exchange: &exchange });

        assert_eq!(body.unwrap(), json!({"idToken": "id", "audience": "codeq-producer"}));
    }

    #[tokio::test]
    async fn transport_errors_do_not_show_the_api_key() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);

        let err = Iam::new(&url, "secret-key").unwrap().login("a", "b", &Exchange::default()).await;

        let err = err.unwrap_err();
        let mut chain = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(!chain.contains("secret-key"), "{chain}");
    }

    #[test]
    fn a_base_url_that_is_not_http_is_refused() {
        assert!(matches!(Iam::new("ftp://x", "k"), Err(Error::InvalidBaseUrl { .. })));
    }
}
