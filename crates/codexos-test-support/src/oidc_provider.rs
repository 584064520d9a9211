//! A fake OpenID Connect provider over real HTTP on 127.0.0.1, for testing
//! single sign-on end to end: discovery (OIDC Discovery 1.0), the key set
//! (JWKS), an authorization endpoint that logs a configured user in at once
//! (no page) and redirects back with a code, and a token endpoint that
//! checks what RFC 6749 and RFC 7636 ask: the grant type, the client's
//! authentication (HTTP Basic, the body, or none for a public client), the
//! code (single use, short-lived, issued to this client), the redirect URI
//! and the PKCE verifier against the challenge (S256). It answers a signed
//! ID token (OIDC Core 2), ES256 with a key made for each provider, or
//! RS256 with a key made once per test process.
//!
//! [`Misbehaviour`] makes it answer what a broken or hostile provider
//! would: a token for another audience or from another issuer, signed by
//! another key, expired, with another nonce, unsigned, ...

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Where the provider's endpoints live under its address: the issuer has a
/// path, as many real ones do (`/realms/...`), so discovery must keep it.
const ISSUER_PATH: &str = "/idp";
/// How long a code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(60);

/// What the provider is told to get wrong, for the next logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misbehaviour {
    #[default]
    None,
    /// The ID token is for another client (`aud`).
    WrongAudience,
    /// `aud` names us and another client, with no `azp`.
    ExtraAudienceWithoutAzp,
    /// The ID token names another issuer (`iss`).
    WrongIssuer,
    /// The ID token is signed by a key the provider does not publish,
    /// under the `kid` of the one it does.
    ForeignSignature,
    /// The ID token expired ten minutes ago.
    Expired,
    /// The ID token carries another nonce than the one asked for.
    WrongNonce,
    /// `email_verified` is false.
    EmailUnverified,
    /// The ID token is unsigned (`alg: none`).
    Unsigned,
    /// The ID token is signed with HS256 and the client secret as the key.
    Hmac,
    /// The token endpoint refuses the code (400 `invalid_grant`).
    TokenError,
    /// The authorization endpoint refuses the login (`error=access_denied`).
    AuthorizeError,
    /// The authorization endpoint records a challenge other than the one it
    /// was sent, as if the request had been tampered with: the client's
    /// verifier then fails the PKCE check at the token endpoint.
    ChallengeMismatch,
}

/// The signature algorithm of the provider's ID tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    Es256,
    Rs256,
}

/// How the provider is set up.
#[derive(Debug, Clone)]
pub struct FakeIdpConfig {
    pub client_id: String,
    /// `None`: a public client, which authenticates with PKCE alone.
    pub client_secret: Option<String>,
    /// The one redirect URI registered for the client.
    pub redirect_uri: String,
    pub algorithm: SigningAlgorithm,
}

/// The person the authorization endpoint logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUser {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
}

/// A request the token endpoint received, as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The form's fields.
    pub form: HashMap<String, String>,
    /// `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
}

struct SigningKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

/// A code issued by the authorization endpoint, waiting for its exchange.
#[derive(Debug, Clone)]
struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    issued_at: SystemTime,
}

struct Shared {
    issuer: String,
    config: FakeIdpConfig,
    key: SigningKey,
    /// Same algorithm, not published: for `ForeignSignature`.
    foreign_key: SigningKey,
    user: Mutex<FakeUser>,
    misbehaviour: Mutex<Misbehaviour>,
    codes: Mutex<HashMap<String, IssuedCode>>,
    token_requests: Mutex<Vec<TokenRequest>>,
    authorize_requests: Mutex<Vec<HashMap<String, String>>>,
}

/// A running fake provider; dropping it stops the server.
pub struct FakeIdp {
    address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp").field("issuer", &self.shared.issuer).finish_non_exhaustive()
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new P-256 key (ES256).
fn ec_key(kid: &str) -> SigningKey {
    use p256::pkcs8::EncodePrivateKey;
    let secret = loop {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        // Fails only for 0 or a value past the group order: draw again.
        if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
            break secret;
        }
    };
    let der = secret.to_pkcs8_der().expect("encode the P-256 key");
    signing_key(Algorithm::ES256, EncodingKey::from_ec_der(der.as_bytes()), kid)
}

/// An RSA key (RS256), made once per process: 2048-bit generation takes a
/// while, and every provider of the process may share it (the foreign one
/// gets its own, made the same way).
fn rsa_key(kid: &str, foreign: bool) -> SigningKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    static KEYS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let make = || {
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key");
            key.to_pkcs1_der().expect("encode the RSA key").as_bytes().to_vec()
        };
        [make(), make()]
    });
    let der = &keys[usize::from(foreign)];
    signing_key(Algorithm::RS256, EncodingKey::from_rsa_der(der), kid)
}

fn signing_key(algorithm: Algorithm, encoding: EncodingKey, kid: &str) -> SigningKey {
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("the public key as a JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    SigningKey { algorithm, encoding, jwk }
}

impl FakeIdp {
    /// Starts a provider for one client, logging in `alice@acme.test`.
    pub async fn start(config: FakeIdpConfig) -> FakeIdp {
        let kid = format!("key-{}", &random_token()[..8]);
        let (key, foreign_key) = match config.algorithm {
            SigningAlgorithm::Es256 => (ec_key(&kid), ec_key(&kid)),
            SigningAlgorithm::Rs256 => tokio::task::spawn_blocking(move || (rsa_key(&kid, false), rsa_key(&kid, true)))
                .await
                .expect("make the RSA keys"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake identity provider");
        let address = listener.local_addr().expect("the fake identity provider's address");
        let shared = Arc::new(Shared {
            issuer: format!("http://{address}{ISSUER_PATH}"),
            config,
            key,
            foreign_key,
            user: Mutex::new(FakeUser {
                subject: "alice-0001".to_owned(),
                email: "alice@acme.test".to_owned(),
                email_verified: true,
            }),
            misbehaviour: Mutex::default(),
            codes: Mutex::default(),
            token_requests: Mutex::default(),
            authorize_requests: Mutex::default(),
        });
        let app = Router::new()
            .route(&format!("{ISSUER_PATH}/.well-known/openid-configuration"), get(discovery))
            .route(&format!("{ISSUER_PATH}/jwks"), get(jwks))
            .route(&format!("{ISSUER_PATH}/authorize"), get(authorize))
            .route(&format!("{ISSUER_PATH}/token"), post(token))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("fake identity provider stopped: {err}");
            }
        });
        FakeIdp { address, shared, server }
    }

    /// The issuer, e.g. `http://127.0.0.1:PORT/idp`.
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Who the next logins are.
    pub fn set_user(&self, user: FakeUser) {
        *lock(&self.shared.user) = user;
    }

    /// What the next logins get wrong (`Misbehaviour::None` to behave).
    pub fn misbehave(&self, misbehaviour: Misbehaviour) {
        *lock(&self.shared.misbehaviour) = misbehaviour;
    }

    /// Every request the token endpoint received.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.token_requests).clone()
    }

    /// Every authorization request's parameters.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.shared.authorize_requests).clone()
    }

    /// An ID token signed with the provider's published key, with these
    /// claims: for tests of the checks themselves.
    pub fn sign(&self, claims: &Value) -> String {
        sign_with(&self.shared.key, claims)
    }

    /// The published key set.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.shared.key.jwk.clone()] }
    }
}

fn sign_with(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = key.jwk.common.key_id.clone();
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign the ID token")
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    // RFC 6749 5.1: token answers must not be cached.
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body.clone())).into_response()
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        // A parameter sent twice is an error (RFC 6749 3.1): kept as empty.
        map.entry(key.into_owned()).and_modify(|seen: &mut String| seen.clear()).or_insert(value.into_owned());
    }
    map
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    let issuer = &shared.issuer;
    let algorithm = format!("{:?}", shared.key.algorithm);
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [algorithm],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
        }),
    )
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &json!({ "keys": [shared.key.jwk] }))
}

/// RFC 6749 4.1.1 and 4.1.2: the client and the redirect URI are checked
/// first, and a problem with either is shown to the person (400), never
/// redirected; any other problem goes back to the client as `error`.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = query_map(query.as_deref());
    lock(&shared.authorize_requests).push(params.clone());
    let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if param("client_id") != shared.config.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if param("redirect_uri") != shared.config.redirect_uri {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered for this client").into_response();
    }
    let state = params.get("state").cloned();
    let back = |pairs: &[(&str, &str)]| {
        let mut url = url::Url::parse(&shared.config.redirect_uri).expect("the registered redirect URI");
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in pairs {
                query.append_pair(key, value);
            }
            if let Some(state) = &state {
                query.append_pair("state", state);
            }
        }
        (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
    };
    let refuse = |error: &str, description: &str| back(&[("error", error), ("error_description", description)]);
    if param("response_type") != "code" {
        return refuse("unsupported_response_type", "only the authorization code flow");
    }
    if !param("scope").split(' ').any(|scope| scope == "openid") {
        return refuse("invalid_scope", "openid is required");
    }
    // PKCE is required of every client (RFC 7636 4.4.1), S256 only.
    if param("code_challenge").is_empty() {
        return refuse("invalid_request", "code_challenge is required");
    }
    if param("code_challenge_method") != "S256" {
        return refuse("invalid_request", "code_challenge_method must be S256");
    }
    let misbehaviour = *lock(&shared.misbehaviour);
    if misbehaviour == Misbehaviour::AuthorizeError {
        return refuse("access_denied", "the user is not assigned to this application");
    }
    let code_challenge = match misbehaviour {
        Misbehaviour::ChallengeMismatch => pkce_challenge(&random_token()),
        _ => param("code_challenge").to_owned(),
    };
    let code = random_token();
    lock(&shared.codes).insert(
        code.clone(),
        IssuedCode {
            client_id: param("client_id").to_owned(),
            redirect_uri: param("redirect_uri").to_owned(),
            code_challenge,
            nonce: params.get("nonce").cloned(),
            issued_at: SystemTime::now(),
        },
    );
    back(&[("code", &code)])
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 6749 4.1.3 with RFC 7636 4.6; errors as 5.2 has them.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = query_map(std::str::from_utf8(&body).ok());
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let response = exchange(&shared, &headers, &form);
    lock(&shared.token_requests).push(TokenRequest { form, authorization, status: response.status().as_u16() });
    response
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(status, &json!({ "error": error, "error_description": description }))
}

/// The client's id and whether it proved who it is (RFC 6749 2.3.1).
/// The refusal's `error_description` for `invalid_client`, if refused.
fn authenticate_client(
    shared: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), &'static str> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .map(|encoded| {
            let decoded = BASE64.decode(encoded.trim()).unwrap_or_default();
            let text = String::from_utf8(decoded).unwrap_or_default();
            let (id, secret) = text.split_once(':').unwrap_or_default();
            let decode = |part: &str| {
                url::form_urlencoded::parse(format!("x={part}").as_bytes()).next().map(|(_, value)| value.into_owned())
            };
            (decode(id).unwrap_or_default(), decode(secret).unwrap_or_default())
        });
    let (client_id, secret) = match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => return Err("more than one client authentication method"),
        (Some((id, secret)), None) => (id, Some(secret)),
        (None, secret) => (form.get("client_id").cloned().unwrap_or_default(), secret.cloned()),
    };
    if client_id != shared.config.client_id {
        return Err("unknown client");
    }
    match (&shared.config.client_secret, secret) {
        (None, None) => Ok(()),
        (Some(expected), Some(given)) if *expected == given => Ok(()),
        (None, Some(_)) => Err("a public client has no secret"),
        (Some(_), _) => Err("client authentication failed"),
    }
}

fn exchange(shared: &Shared, headers: &HeaderMap, form: &HashMap<String, String>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return token_error(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a form");
    }
    if field("grant_type") != "authorization_code" {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only authorization_code");
    }
    if let Err(description) = authenticate_client(shared, headers, form) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    }
    // A code is used once, whatever happens next.
    let Some(issued) = lock(&shared.codes).remove(field("code")) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown or already used code");
    };
    let invalid_grant = |description: &str| token_error(StatusCode::BAD_REQUEST, "invalid_grant", description);
    if issued.issued_at.elapsed().unwrap_or_default() > CODE_TTL {
        return invalid_grant("the code expired");
    }
    if issued.client_id != shared.config.client_id {
        return invalid_grant("the code was issued to another client");
    }
    if field("redirect_uri") != issued.redirect_uri {
        return invalid_grant("redirect_uri differs from the authorization request's");
    }
    let verifier = field("code_verifier");
    let verifier_valid = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte));
    if !verifier_valid {
        return invalid_grant("code_verifier is missing or malformed");
    }
    if pkce_challenge(verifier) != issued.code_challenge {
        return invalid_grant("PKCE verification failed: code_verifier does not match the code_challenge");
    }
    let misbehaviour = *lock(&shared.misbehaviour);
    if misbehaviour == Misbehaviour::TokenError {
        return invalid_grant("the code was revoked");
    }
    let user = lock(&shared.user).clone();
    let now = now_seconds();
    let mut claims = json!({
        "iss": shared.issuer,
        "sub": user.subject,
        "aud": shared.config.client_id,
        "exp": now + 300,
        "iat": now,
        "auth_time": now,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": "Alice Example",
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    match misbehaviour {
        Misbehaviour::WrongAudience => claims["aud"] = json!("another-client"),
        Misbehaviour::ExtraAudienceWithoutAzp => claims["aud"] = json!([shared.config.client_id, "another-client"]),
        Misbehaviour::WrongIssuer => claims["iss"] = json!(format!("{}-other", shared.issuer)),
        Misbehaviour::Expired => {
            claims["exp"] = json!(now - 600);
            claims["iat"] = json!(now - 900);
        }
        Misbehaviour::WrongNonce => claims["nonce"] = json!("not-the-nonce-you-sent"),
        Misbehaviour::EmailUnverified => claims["email_verified"] = json!(false),
        _ => {}
    }
    let id_token = match misbehaviour {
        Misbehaviour::ForeignSignature => sign_with(&shared.foreign_key, &claims),
        Misbehaviour::Unsigned => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
            format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
        }
        Misbehaviour::Hmac => {
            let secret = shared.config.client_secret.clone().unwrap_or_default();
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
                .expect("sign with HS256")
        }
        _ => sign_with(&shared.key, &claims),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
            "scope": "openid email profile",
        }),
    )
}
