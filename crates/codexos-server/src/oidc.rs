//! The OpenID Connect relying party behind single sign-on: discovery of a
//! provider (`{issuer}/.well-known/openid-configuration`), its signing keys
//! (JWKS, cached per provider for a few minutes and fetched again when a
//! token names a key we do not know), the authorization request with PKCE
//! (RFC 7636, S256), the code exchange at the token endpoint (RFC 6749
//! 4.1.3) and the checks OIDC Core 3.1.3.7 asks of an ID token.
//!
//! Every provider URL is HTTPS, or plain HTTP on a loopback address when
//! the operator allows it (`server.sso_allow_loopback_http`, for tests and
//! local development). Redirects are never followed, every call has a
//! timeout and every answer a size limit: a provider is configured by a
//! tenant's admin, so what it answers is outside input.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// How long a discovery document and a key set are trusted before they
/// are fetched again.
const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// A token naming an unknown key makes us fetch the keys again (the
/// provider may have rotated them), but not more often than this.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a provider.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECONDS: u64 = 60;
/// The signature algorithms accepted on an ID token: asymmetric ones only.
/// `none` and the HMAC family (whose key would be the client secret, which
/// a public client does not have) are refused.
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];
/// The scopes asked for when a tenant names none.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// What went wrong talking to a provider or checking what it said; the
/// message names the failed check.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("{0}")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {reason}")]
    BadAnswer { url: String, reason: String },
    #[error(
        "the discovery document at {url} names the issuer '{found}', not '{expected}' (configure the issuer exactly as the provider names it)"
    )]
    IssuerMismatch { url: String, found: String, expected: String },
    #[error("the token endpoint refused the code: {0}")]
    TokenRefused(String),
    #[error("ID token refused: {0}")]
    IdToken(#[from] IdTokenError),
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("malformed ({0})")]
    Malformed(String),
    #[error("unsupported signature algorithm {0} (accepted: RS256/384/512, PS256/384/512, ES256, ES384)")]
    Algorithm(String),
    #[error("signed by a key the issuer does not publish{}", .0.as_ref().map(|kid| format!(" (kid '{kid}')")).unwrap_or_default())]
    UnknownKey(Option<String>),
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer (expected '{0}')")]
    WrongIssuer(String),
    #[error("wrong audience (our client id is not in aud)")]
    WrongAudience,
    #[error("wrong authorized party (azp is not our client id)")]
    WrongAuthorizedParty,
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("nonce mismatch")]
    NonceMismatch,
    #[error("no email claim (ask for the email scope)")]
    NoEmail,
    #[error("the email address is not verified by the provider (email_verified is false)")]
    EmailNotVerified,
}

/// What a provider's discovery document says that we use.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub response_types_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
}

impl ProviderMetadata {
    /// How a confidential client authenticates: `client_secret_basic`
    /// unless the provider lists only `client_secret_post` (RFC 8414: the
    /// default is `client_secret_basic`).
    fn secret_in_body(&self) -> bool {
        self.token_endpoint_auth_methods_supported.as_ref().is_some_and(|methods| {
            !methods.iter().any(|method| method == "client_secret_basic")
                && methods.iter().any(|method| method == "client_secret_post")
        })
    }

    /// Whether a client with a secret can authenticate at all.
    pub fn accepts_client_secret(&self) -> bool {
        self.token_endpoint_auth_methods_supported.as_ref().is_none_or(|methods| {
            methods.iter().any(|method| method == "client_secret_basic" || method == "client_secret_post")
        })
    }
}

/// The person an ID token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// Lowercase.
    pub email: String,
}

/// What an ID token must say: from the tenant's configuration and the
/// login under way.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
}

/// A login about to start: the values its answer is checked against, and
/// the challenge sent to the provider.
#[derive(Debug)]
pub struct LoginSecrets {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl LoginSecrets {
    /// 256 random bits each, base64url: a PKCE verifier of 43 characters
    /// of the unreserved set (RFC 7636 4.1).
    pub fn generate() -> Self {
        Self { state: random_token(), nonce: random_token(), pkce_verifier: random_token() }
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `url` may be a provider's: HTTPS with a host and no
/// credentials or fragment, or HTTP to a loopback address when allowed.
pub fn check_provider_url(url: &str, allow_loopback_http: bool) -> Result<url::Url, OidcError> {
    let parsed = url::Url::parse(url).map_err(|err| OidcError::Url(format!("'{url}' is not a URL: {err}")))?;
    let Some(host) = parsed.host() else { return Err(OidcError::Url(format!("'{url}' has no host"))) };
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err(OidcError::Url(format!("'{url}' must not hold credentials or a fragment")));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if allow_loopback_http && is_loopback(&host) => Ok(parsed),
        "http" if is_loopback(&host) => Err(OidcError::Url(format!(
            "'{url}' is plain HTTP; this server allows that for loopback providers only with server.sso_allow_loopback_http"
        ))),
        _ => Err(OidcError::Url(format!("'{url}' must be an https:// URL"))),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// The URL a discovery document is found at (OIDC Discovery 4: a trailing
/// slash of the issuer is dropped before the well-known path).
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// The authorization request (OIDC Core 3.1.2.1) the browser is sent to.
pub fn authorization_url(
    metadata: &ProviderMetadata,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    login: &LoginSecrets,
) -> Result<String, OidcError> {
    // The endpoint may carry query parameters of its own; ours are added.
    let mut url = url::Url::parse(&metadata.authorization_endpoint)
        .map_err(|err| OidcError::Url(format!("authorization_endpoint: {err}")))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &pkce_challenge(&login.pkce_verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

struct Cached<T> {
    fetched_at: Instant,
    value: Arc<T>,
}

/// The HTTP client to providers and its caches; one per server.
pub struct OidcClient {
    http: reqwest::Client,
    allow_loopback_http: bool,
    discovery: Mutex<HashMap<String, Cached<ProviderMetadata>>>,
    jwks: Mutex<HashMap<String, Cached<JwkSet>>>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient").field("allow_loopback_http", &self.allow_loopback_http).finish_non_exhaustive()
    }
}

impl OidcClient {
    pub fn new(allow_loopback_http: bool) -> Result<Self, String> {
        let http = codexos_engine::http_client::builder()
            .map_err(|err| format!("cannot set up TLS: {err}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("codexos/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
        Ok(Self { http, allow_loopback_http, discovery: Mutex::default(), jwks: Mutex::default() })
    }

    pub fn allow_loopback_http(&self) -> bool {
        self.allow_loopback_http
    }

    /// The provider's metadata, from the cache when fresh.
    pub async fn discover(&self, issuer: &str) -> Result<Arc<ProviderMetadata>, OidcError> {
        if let Some(cached) = fresh(&self.discovery, issuer, CACHE_TTL) {
            return Ok(cached);
        }
        self.discover_now(issuer).await
    }

    /// Fetches and checks the provider's discovery document, whatever the
    /// cache holds (configuring a provider checks it this way).
    pub async fn discover_now(&self, issuer: &str) -> Result<Arc<ProviderMetadata>, OidcError> {
        check_provider_url(issuer, self.allow_loopback_http)?;
        let url = discovery_url(issuer);
        let body = self.get(&url).await?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body).map_err(|err| OidcError::BadAnswer {
            url: url.clone(),
            reason: format!("no discovery document: {err}"),
        })?;
        // OIDC Discovery 4.3: the issuer must be exactly the one asked.
        if metadata.issuer != issuer {
            return Err(OidcError::IssuerMismatch { url, found: metadata.issuer, expected: issuer.to_owned() });
        }
        for (name, endpoint) in [
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
            ("jwks_uri", &metadata.jwks_uri),
        ] {
            check_provider_url(endpoint, self.allow_loopback_http).map_err(|err| OidcError::BadAnswer {
                url: url.clone(),
                reason: format!("an unusable {name}: {err}"),
            })?;
        }
        let refuse = |reason: &str| OidcError::BadAnswer { url: url.clone(), reason: reason.to_owned() };
        if !metadata.response_types_supported.is_empty()
            && !metadata.response_types_supported.iter().any(|kind| kind == "code")
        {
            return Err(refuse("a provider without the authorization code flow (response_types_supported)"));
        }
        if metadata
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|methods| !methods.iter().any(|m| m == "S256"))
        {
            return Err(refuse("a provider without PKCE S256 (code_challenge_methods_supported)"));
        }
        if let Some(algorithms) = &metadata.id_token_signing_alg_values_supported
            && !algorithms.iter().any(|name| parse_algorithm(name).is_some())
        {
            return Err(refuse(
                "a provider signing ID tokens with no algorithm we accept (id_token_signing_alg_values_supported)",
            ));
        }
        let metadata = Arc::new(metadata);
        store(&self.discovery, issuer, Arc::clone(&metadata));
        Ok(metadata)
    }

    /// Exchanges an authorization code for tokens and answers the ID token
    /// (RFC 6749 4.1.3 with the PKCE verifier). A client secret goes in
    /// HTTP Basic authentication, or in the body for a provider that only
    /// takes it there; a public client sends its id in the body.
    pub async fn exchange_code(
        &self,
        metadata: &ProviderMetadata,
        client_id: &str,
        client_secret: Option<&SecretString>,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, OidcError> {
        let url = &metadata.token_endpoint;
        check_provider_url(url, self.allow_loopback_http)?;
        let mut request = self.http.post(url).header(reqwest::header::ACCEPT, "application/json");
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ];
        match client_secret {
            Some(secret) if metadata.secret_in_body() => {
                form.extend([("client_id", client_id), ("client_secret", secret.expose_secret())]);
            }
            Some(secret) => {
                // RFC 6749 2.3.1: both are form-encoded before Basic.
                let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
                let credentials = BASE64.encode(format!("{}:{}", encode(client_id), encode(secret.expose_secret())));
                request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {credentials}"));
            }
            None => form.push(("client_id", client_id)),
        }
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|err| OidcError::Unreachable { url: url.clone(), reason: error_chain(&err) })?;
        let status = response.status();
        let body = read_capped(response, url).await?;
        if !status.is_success() {
            // RFC 6749 5.2: `error` and maybe `error_description`.
            let error: TokenError = serde_json::from_slice(&body).unwrap_or_default();
            let mut reason = format!("HTTP {}", status.as_u16());
            if let Some(code) = error.error {
                reason = format!("{reason}, {}", printable(&code));
            }
            if let Some(description) = error.error_description {
                reason = format!("{reason}: {}", printable(&description));
            }
            return Err(OidcError::TokenRefused(reason));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|err| OidcError::BadAnswer { url: url.clone(), reason: format!("no token response: {err}") })?;
        tokens.id_token.ok_or_else(|| OidcError::TokenRefused("the answer holds no id_token".to_owned()))
    }

    /// Checks an ID token against the provider's keys and what it must say;
    /// a key id we do not know makes us fetch the keys again, once.
    pub async fn verify_id_token(
        &self,
        metadata: &ProviderMetadata,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<Identity, OidcError> {
        let keys = self.jwks(&metadata.jwks_uri, false).await?;
        match verify_id_token(token, &keys, expected) {
            Err(IdTokenError::UnknownKey(_)) => {
                let keys = self.jwks(&metadata.jwks_uri, true).await?;
                Ok(verify_id_token(token, &keys, expected)?)
            }
            other => Ok(other?),
        }
    }

    async fn jwks(&self, url: &str, refresh: bool) -> Result<Arc<JwkSet>, OidcError> {
        let max_age = if refresh { JWKS_REFETCH_AFTER } else { CACHE_TTL };
        if let Some(cached) = fresh(&self.jwks, url, max_age) {
            return Ok(cached);
        }
        check_provider_url(url, self.allow_loopback_http)?;
        let body = self.get(url).await?;
        let keys = parse_jwks(&body)
            .map_err(|reason| OidcError::BadAnswer { url: url.to_owned(), reason: format!("no key set: {reason}") })?;
        let keys = Arc::new(keys);
        store(&self.jwks, url, Arc::clone(&keys));
        Ok(keys)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, OidcError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| OidcError::Unreachable { url: url.to_owned(), reason: error_chain(&err) })?;
        let status = response.status();
        if !status.is_success() {
            return Err(OidcError::BadAnswer { url: url.to_owned(), reason: format!("HTTP {}", status.as_u16()) });
        }
        read_capped(response, url).await
    }
}

fn fresh<T>(cache: &Mutex<HashMap<String, Cached<T>>>, key: &str, max_age: Duration) -> Option<Arc<T>> {
    let cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    cache.get(key).filter(|cached| cached.fetched_at.elapsed() < max_age).map(|cached| Arc::clone(&cached.value))
}

fn store<T>(cache: &Mutex<HashMap<String, Cached<T>>>, key: &str, value: Arc<T>) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    // Tenants come and go: entries long stale are dropped as others arrive.
    cache.retain(|_, cached| cached.fetched_at.elapsed() < CACHE_TTL * 4);
    cache.insert(key.to_owned(), Cached { fetched_at: Instant::now(), value });
}

/// A key set, keeping the keys we can use: a key of a type or curve the
/// library does not know is skipped rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Result<JwkSet, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|err| err.to_string())?;
    let keys = raw.keys.into_iter().filter_map(|key| serde_json::from_value::<Jwk>(key).ok()).collect();
    Ok(JwkSet { keys })
}

async fn read_capped(mut response: reqwest::Response, url: &str) -> Result<Vec<u8>, OidcError> {
    let too_large =
        || OidcError::BadAnswer { url: url.to_owned(), reason: format!("more than {} KiB", MAX_RESPONSE_BYTES / 1024) };
    if response.content_length().is_some_and(|length| length > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| OidcError::Unreachable { url: url.to_owned(), reason: error_chain(&err) })?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text = format!("{text}: {next}");
        source = next.source();
    }
    text
}

/// Text from a provider, fit for a message: printable, at most 200 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[derive(Debug, Default, Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

fn parse_algorithm(name: &str) -> Option<Algorithm> {
    ALGORITHMS.into_iter().find(|algorithm| format!("{algorithm:?}") == name)
}

/// The claims of an ID token that we check or use (OIDC Core 2, 5.1).
#[derive(Debug, Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: Audience,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, though some providers send `"true"`/`"false"`.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        }
    }
}

/// The header's `alg`, read before anything else so that `none`, HMAC and
/// anything unknown are refused by name.
fn header_algorithm(token: &str) -> Result<Algorithm, IdTokenError> {
    let header = token.split('.').next().unwrap_or_default();
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| IdTokenError::Malformed("the header is not base64url".to_owned()))?;
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| IdTokenError::Malformed("the header is not a JOSE header".to_owned()))?;
    parse_algorithm(&header.alg).ok_or(IdTokenError::Algorithm(printable(&header.alg)))
}

/// Whether a published key may verify a token signed with `algorithm`.
fn key_fits(key: &Jwk, algorithm: Algorithm) -> bool {
    let family_fits = match &key.algorithm {
        AlgorithmParameters::RSA(_) => {
            matches!(algorithm.family(), jsonwebtoken::AlgorithmFamily::Rsa)
        }
        AlgorithmParameters::EllipticCurve(params) => match algorithm {
            Algorithm::ES256 => params.curve == jsonwebtoken::jwk::EllipticCurve::P256,
            Algorithm::ES384 => params.curve == jsonwebtoken::jwk::EllipticCurve::P384,
            _ => false,
        },
        _ => false,
    };
    let use_fits = !matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption));
    let algorithm_fits = match &key.common.key_algorithm {
        None => true,
        Some(declared) => format!("{declared:?}") == format!("{algorithm:?}"),
    };
    family_fits && use_fits && algorithm_fits
}

/// Checks an ID token (OIDC Core 3.1.3.7): the signature against the
/// provider's published keys, with an asymmetric algorithm; `iss` exactly
/// the issuer; our client id in `aud`, and as `azp` when that is present
/// (required with several audiences); `exp` in the future and `iat`, `nbf`
/// not (a minute of leeway each); `nonce` the login's. Then the email: it
/// must be there, and not marked unverified.
pub fn verify_id_token(token: &str, keys: &JwkSet, expected: &Expected<'_>) -> Result<Identity, IdTokenError> {
    let algorithm = header_algorithm(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|err| IdTokenError::Malformed(err.to_string()))?;
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|key| match &header.kid {
            Some(kid) => key.common.key_id.as_deref() == Some(kid.as_str()),
            None => true,
        })
        .filter(|key| key_fits(key, algorithm))
        .collect();
    // Without a `kid` the key must be unambiguous.
    let key = match candidates.as_slice() {
        [key] => *key,
        [_, ..] if header.kid.is_some() => candidates[0],
        _ => return Err(IdTokenError::UnknownKey(header.kid.clone())),
    };
    let decoding_key = DecodingKey::from_jwk(key)
        .map_err(|err| IdTokenError::Malformed(format!("the provider's key cannot be used: {err}")))?;
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<IdTokenClaims>(token, &decoding_key, &validation)
        .map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature => IdTokenError::BadSignature,
                ErrorKind::ExpiredSignature => IdTokenError::Expired,
                ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
                ErrorKind::InvalidIssuer => IdTokenError::WrongIssuer(expected.issuer.to_owned()),
                ErrorKind::InvalidAudience => IdTokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm(format!("{algorithm:?}")),
                _ => IdTokenError::Malformed(err.to_string()),
            }
        })?
        .claims;
    // The library checked these; they are checked again on our own reading
    // of the claims, exactly as OIDC words them.
    if claims.iss != expected.issuer {
        return Err(IdTokenError::WrongIssuer(expected.issuer.to_owned()));
    }
    let audiences = claims.aud.as_slice();
    if !audiences.iter().any(|audience| audience == expected.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    match &claims.azp {
        Some(azp) if azp != expected.client_id => return Err(IdTokenError::WrongAuthorizedParty),
        None if audiences.len() > 1 => return Err(IdTokenError::WrongAuthorizedParty),
        _ => {}
    }
    let now = jsonwebtoken::get_current_timestamp() as f64;
    match claims.iat {
        None => return Err(IdTokenError::Malformed("no iat claim".to_owned())),
        Some(iat) if !iat.is_finite() => return Err(IdTokenError::Malformed("iat is not a time".to_owned())),
        Some(iat) if iat > now + LEEWAY_SECONDS as f64 => return Err(IdTokenError::NotYetValid),
        Some(_) => {}
    }
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(IdTokenError::NonceMismatch);
    }
    let email =
        claims.email.as_deref().map(str::trim).filter(|email| !email.is_empty()).ok_or(IdTokenError::NoEmail)?;
    let verified = match &claims.email_verified {
        None => true,
        Some(serde_json::Value::Bool(verified)) => *verified,
        Some(serde_json::Value::String(text)) => !text.eq_ignore_ascii_case("false"),
        Some(_) => false,
    };
    if !verified {
        return Err(IdTokenError::EmailNotVerified);
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::Malformed("an empty sub claim".to_owned()));
    }
    Ok(Identity { subject: claims.sub, email: codexos_store::normalize_email(email) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let login = LoginSecrets::generate();
        assert_eq!(login.pkce_verifier.len(), 43);
        assert!(login.pkce_verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(login.state, login.nonce);
    }

    #[test]
    fn provider_urls_are_https_or_allowed_loopback() {
        assert!(check_provider_url("https://id.example.com", false).is_ok());
        assert!(check_provider_url("https://id.example.com/realms/acme", false).is_ok());
        assert!(check_provider_url("http://id.example.com", true).is_err());
        assert!(check_provider_url("http://127.0.0.1:8080", false).is_err());
        assert!(check_provider_url("http://127.0.0.1:8080", true).is_ok());
        assert!(check_provider_url("http://[::1]:8080", true).is_ok());
        assert!(check_provider_url("http://localhost:8080", true).is_ok());
        assert!(check_provider_url("http://10.0.0.1", true).is_err());
        assert!(check_provider_url("https://user:pw@id.example.com", false).is_err());
        assert!(check_provider_url("ftp://id.example.com", true).is_err());
        assert!(check_provider_url("id.example.com", true).is_err());
    }

    #[test]
    fn discovery_drops_a_trailing_slash() {
        assert_eq!(discovery_url("https://a.test/"), "https://a.test/.well-known/openid-configuration");
        assert_eq!(discovery_url("https://a.test/r/x"), "https://a.test/r/x/.well-known/openid-configuration");
    }

    #[test]
    fn none_and_hmac_are_refused_by_name() {
        let token = |alg: &str| format!("{}.e30.", URL_SAFE_NO_PAD.encode(format!("{{\"alg\":\"{alg}\"}}")));
        for alg in ["none", "HS256", "HS512", "EdDSA"] {
            assert_eq!(header_algorithm(&token(alg)), Err(IdTokenError::Algorithm(alg.to_owned())), "{alg}");
        }
        assert_eq!(header_algorithm(&token("RS256")), Ok(Algorithm::RS256));
        assert_eq!(header_algorithm(&token("ES256")), Ok(Algorithm::ES256));
        assert!(matches!(header_algorithm("!!.e30."), Err(IdTokenError::Malformed(_))));
        let keys = JwkSet { keys: Vec::new() };
        let expected = Expected { issuer: "https://a.test", client_id: "c", nonce: "n" };
        assert_eq!(verify_id_token(&token("none"), &keys, &expected), Err(IdTokenError::Algorithm("none".to_owned())));
    }

    /// Each claim check on tokens the fake provider signs with its
    /// published key: only the claims differ from a good token.
    #[tokio::test]
    async fn each_claim_is_checked() {
        use codexos_test_support::oidc_provider::{FakeIdp, FakeIdpConfig, SigningAlgorithm};
        use serde_json::json;
        let idp = FakeIdp::start(FakeIdpConfig {
            client_id: "codexos".to_owned(),
            client_secret: None,
            redirect_uri: "http://127.0.0.1:1/v1/sso/callback".to_owned(),
            algorithm: SigningAlgorithm::Es256,
        })
        .await;
        let keys = idp.jwks();
        let expected = Expected { issuer: idp.issuer(), client_id: "codexos", nonce: "n-1" };
        let now = jsonwebtoken::get_current_timestamp();
        let good = json!({
            "iss": idp.issuer(), "sub": "alice-1", "aud": "codexos", "exp": now + 300, "iat": now,
            "nonce": "n-1", "email": "Alice@Acme.test", "email_verified": true,
        });
        // The good claims with `patch` applied (a null removes the claim).
        let check = |patch: serde_json::Value| {
            let mut claims = good.clone();
            for (name, value) in patch.as_object().into_iter().flatten() {
                match (value.is_null(), claims.as_object_mut()) {
                    (true, Some(claims)) => drop(claims.remove(name)),
                    (false, _) => claims[name] = value.clone(),
                    (true, None) => {}
                }
            }
            verify_id_token(&idp.sign(&claims), &keys, &expected)
        };
        assert_eq!(
            check(json!({})),
            Ok(Identity { subject: "alice-1".to_owned(), email: "alice@acme.test".to_owned() })
        );
        // Several audiences: ours must also be the authorized party.
        assert!(check(json!({ "aud": ["codexos", "other"], "azp": "codexos" })).is_ok());
        assert!(check(json!({ "email_verified": "true" })).is_ok());
        assert!(check(json!({ "exp": now - 30 })).is_ok(), "within the leeway");
        let cases = [
            (json!({ "aud": "other" }), IdTokenError::WrongAudience),
            (json!({ "aud": ["other", "codexos"] }), IdTokenError::WrongAuthorizedParty),
            (json!({ "azp": "other" }), IdTokenError::WrongAuthorizedParty),
            (json!({ "iss": "https://evil.test" }), IdTokenError::WrongIssuer(idp.issuer().to_owned())),
            (json!({ "exp": now - 120 }), IdTokenError::Expired),
            (json!({ "nbf": now + 600 }), IdTokenError::NotYetValid),
            (json!({ "iat": now + 600 }), IdTokenError::NotYetValid),
            (json!({ "nonce": "n-2" }), IdTokenError::NonceMismatch),
            (json!({ "nonce": null }), IdTokenError::NonceMismatch),
            (json!({ "email": null }), IdTokenError::NoEmail),
            (json!({ "email_verified": false }), IdTokenError::EmailNotVerified),
            (json!({ "email_verified": "false" }), IdTokenError::EmailNotVerified),
        ];
        for (patch, error) in cases {
            assert_eq!(check(patch.clone()), Err(error), "{patch}");
        }
        for missing in ["exp", "iat", "sub"] {
            let result = check(json!({ missing: null }));
            assert!(matches!(result, Err(IdTokenError::Malformed(_))), "{missing}: {result:?}");
        }
        // A tampered payload breaks the signature.
        let token = idp.sign(&good);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = good.clone();
        claims["email"] = json!("mallory@acme.test");
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(verify_id_token(&parts.join("."), &keys, &expected), Err(IdTokenError::BadSignature));
        // A key the set does not hold.
        let empty = JwkSet { keys: Vec::new() };
        assert!(matches!(verify_id_token(&token, &empty, &expected), Err(IdTokenError::UnknownKey(Some(_)))));
        assert!(matches!(verify_id_token("not a token", &keys, &expected), Err(IdTokenError::Malformed(_))));
    }

    #[test]
    fn the_authorization_request_carries_pkce_state_and_nonce() {
        let metadata = ProviderMetadata {
            issuer: "https://a.test".to_owned(),
            authorization_endpoint: "https://a.test/authorize?prompt=login".to_owned(),
            token_endpoint: "https://a.test/token".to_owned(),
            jwks_uri: "https://a.test/jwks".to_owned(),
            response_types_supported: vec!["code".to_owned()],
            code_challenge_methods_supported: None,
            token_endpoint_auth_methods_supported: None,
            id_token_signing_alg_values_supported: None,
        };
        let login = LoginSecrets::generate();
        let scopes = DEFAULT_SCOPES.map(str::to_owned);
        let url = authorization_url(&metadata, "client 1", "https://c.test/v1/sso/callback", &scopes, &login).unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        let pairs: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
        assert_eq!(pairs["prompt"], "login");
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], "client 1");
        assert_eq!(pairs["scope"], "openid email profile");
        assert_eq!(pairs["state"], login.state);
        assert_eq!(pairs["nonce"], login.nonce);
        assert_eq!(pairs["code_challenge"], pkce_challenge(&login.pkce_verifier));
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert!(!metadata.secret_in_body() && metadata.accepts_client_secret());
    }
}
