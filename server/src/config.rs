//! Command line and configuration file: parsing, `${VAR}` substitution, validation, the
//! demo configuration used when no file is given, and environment overrides (SPEC).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// `gateway --config FILE [--listen ADDR]`
#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "A governed AI gateway: one API in front of every model provider"
)]
pub struct Cli {
    /// The TOML configuration file. Without one the gateway runs the demo (SQLite in the
    /// working directory and the `mock` provider).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the config file).
    #[arg(long, env = "GATEWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://gateway.db";
/// Public model names the demo serves with the `mock` provider.
pub const DEMO_MODELS: [&str; 2] = ["mock-gpt", "mock-embedding"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub deployments: Vec<DeploymentConfig>,
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
    #[serde(default)]
    pub router: RouterConfig,
    /// Pricing and budget enforcement.
    #[serde(default)]
    pub spend: SpendConfig,
    /// Per model group settings (strategy).
    #[serde(default)]
    pub model_groups: Vec<ModelGroupConfig>,
    /// Where a group's requests go when the whole group fails.
    #[serde(default)]
    pub fallbacks: Vec<FallbackConfig>,
    /// Rules sending requests to another (cheaper) model; the first that matches applies.
    #[serde(default)]
    pub route_rules: Vec<RouteRuleConfig>,
    /// Single sign-on for the console (OpenID Connect).
    pub sso: Option<SsoConfig>,
    /// Set by the loader, never by the file: true when no config file was given.
    #[serde(skip)]
    pub demo: bool,
}

/// Single sign-on through any OpenID Connect provider (Okta, Entra ID, Google, Keycloak…).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// The issuer exactly as the provider names itself (compared character for character
    /// with the discovery document and the ID tokens); its
    /// `/.well-known/openid-configuration` is read at the first sign-in.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Where the provider sends people back; default `{server.public_url}/auth/callback`.
    pub redirect_url: Option<Url>,
    /// Scopes besides `openid`.
    #[serde(default = "defaults::sso_scopes")]
    pub scopes: Vec<String>,
    /// The ID-token claim holding the user's groups (`groups`, `roles`, …).
    #[serde(default = "defaults::sso_groups_claim")]
    pub groups_claim: String,
    /// E-mail domains allowed to sign in; empty allows any.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// The role of a user none of whose groups maps to one.
    #[serde(default = "defaults::sso_default_role")]
    pub default_role: String,
    /// The label of the sign-in button.
    #[serde(default = "defaults::sso_label")]
    pub label: String,
    /// Group → organisation role; the highest matching role wins.
    #[serde(default)]
    pub roles: Vec<SsoRoleMapping>,
    /// Group → team membership (teams are created when first needed).
    #[serde(default)]
    pub teams: Vec<SsoTeamMapping>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoRoleMapping {
    pub group: String,
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoTeamMapping {
    pub group: String,
    pub team: String,
    /// `lead` or `member` (default).
    #[serde(default = "defaults::sso_team_role")]
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port`; `--listen` and `GATEWAY_LISTEN` override it.
    pub listen: Option<SocketAddr>,
    /// `sqlite://…` or `postgres://…`; `DATABASE_URL` overrides it.
    pub database_url: Option<String>,
    /// Bootstrap admin key; `GATEWAY_MASTER_KEY` overrides it.
    pub master_key: Option<SecretString>,
    /// The server secret virtual keys are hashed with (HMAC-SHA256); `GATEWAY_KEY_HASH_SECRET`
    /// overrides it. Without one it is derived from the master key, so changing the master
    /// key then invalidates every virtual key.
    pub key_hash_secret: Option<SecretString>,
    /// The local break-glass admin's password; `GATEWAY_ADMIN_PASSWORD` overrides it.
    /// Without one, the console offers a first-run setup form.
    pub admin_password: Option<SecretString>,
    /// Directory holding the console's built assets (`pkg/`, `favicon.svg`).
    /// `GATEWAY_SITE_ROOT` overrides it; otherwise `site/` next to the binary, then
    /// `target/site` in the working directory.
    pub site_root: Option<PathBuf>,
    /// The URL people reach the console at; `https://` makes cookies `Secure` and `__Host-`.
    pub public_url: Option<Url>,
    /// Largest request body accepted on the proxy API.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Time a client has to send its request headers.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send its request body.
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Time to open a TCP (and TLS) connection to an upstream.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub upstream_connect_timeout_ms: u64,
    /// Largest upstream response body (non-streaming) the gateway reads.
    #[serde(default = "defaults::max_upstream_body_bytes")]
    pub max_upstream_body_bytes: usize,
    /// Open client connections at most; further ones wait to be accepted.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// On SIGTERM, how long in-flight requests and streams get to finish.
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// `json` (default) or `text`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Redis for counters shared by every instance (rate limits); without it each
    /// instance counts alone. `GATEWAY_REDIS_URL` overrides it.
    pub redis_url: Option<SecretString>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            database_url: None,
            master_key: None,
            key_hash_secret: None,
            admin_password: None,
            site_root: None,
            public_url: None,
            max_body_bytes: defaults::max_body_bytes(),
            header_read_timeout_ms: defaults::header_read_timeout_ms(),
            body_read_timeout_ms: defaults::body_read_timeout_ms(),
            upstream_connect_timeout_ms: defaults::connect_timeout_ms(),
            max_upstream_body_bytes: defaults::max_upstream_body_bytes(),
            max_connections: defaults::max_connections(),
            drain_timeout_ms: defaults::drain_timeout_ms(),
            log_format: LogFormat::default(),
            redis_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    OpenaiCompatible,
    Azure,
    Anthropic,
    Gemini,
    Mock,
    Bedrock,
}

impl ProviderKind {
    /// For providers configured by an API key and a base URL: whether the key is
    /// required, the base URL used when none is given (`None`: it must be given), and a
    /// hint for the error when it is missing.
    fn endpoint_rules(self) -> (bool, Option<&'static str>, &'static str) {
        match self {
            ProviderKind::Openai => (true, Some("https://api.openai.com/v1"), ""),
            ProviderKind::Azure => (true, None, " (https://RESOURCE.openai.azure.com)"),
            ProviderKind::Anthropic => (true, Some("https://api.anthropic.com"), ""),
            ProviderKind::Gemini => (true, Some("https://generativelanguage.googleapis.com"), ""),
            ProviderKind::OpenaiCompatible => (false, None, " (the server's /v1 URL)"),
            // Configured otherwise (see `Config::validate`).
            ProviderKind::Mock | ProviderKind::Bedrock => (false, None, ""),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai-compatible",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
            ProviderKind::Bedrock => "bedrock",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Stable name of this deployment (ledger, headers); defaults to `model#n`.
    pub id: Option<String>,
    /// The public model name clients send.
    pub model: String,
    pub provider: ProviderKind,
    /// The provider's model name; defaults to `model`.
    pub upstream_model: Option<String>,
    pub base_url: Option<Url>,
    pub api_key: Option<SecretString>,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Time from sending the request to the upstream's response headers.
    #[serde(default = "defaults::first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence between two pieces of an upstream body or stream.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Azure: the data-plane `api-version` (default 2024-10-21).
    pub api_version: Option<String>,
    /// Translating providers: drop request parameters the provider cannot honour instead
    /// of answering 400.
    #[serde(default)]
    pub drop_unsupported_params: bool,
    /// `max_tokens` for providers that need one when the client sends none (Anthropic;
    /// default 4096).
    pub default_max_tokens: Option<u32>,
    /// Bedrock: the AWS region (`us-east-1`); picks the default endpoint and signs requests.
    pub region: Option<String>,
    /// Bedrock: the AWS access key id (write `"${AWS_ACCESS_KEY_ID}"`).
    pub aws_access_key_id: Option<SecretString>,
    /// Bedrock: the AWS secret access key (write `"${AWS_SECRET_ACCESS_KEY}"`).
    pub aws_secret_access_key: Option<SecretString>,
    /// Bedrock: the session token of temporary credentials, if any.
    pub aws_session_token: Option<SecretString>,
    /// Time to open a connection to this deployment (default: the server's
    /// `upstream_connect_timeout_ms`).
    pub connect_timeout_ms: Option<u64>,
    /// Requests per minute this deployment takes at most (then others of the group serve).
    pub rpm: Option<u32>,
    /// Tokens per minute this deployment takes at most.
    pub tpm: Option<u64>,
}

/// What happens to unpriced models, and how budgets bound a request's worst case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendConfig {
    /// A model priced neither by `[[prices]]` nor by the shipped catalog: `zero` meters it
    /// at $0 (logged once as a warning at start-up), `refuse` answers 400 for it.
    #[serde(default)]
    pub unpriced: Unpriced,
    /// The output-token bound of a request that sets no `max_tokens` for a model whose
    /// output limit the catalog does not know (worst case held against budgets).
    #[serde(default = "defaults::default_max_output_tokens")]
    pub default_max_output_tokens: i64,
    /// Where budget alerts go (Slack-compatible JSON `{"text": …}`).
    pub alert_webhook: Option<Url>,
    /// When a client leaves a stream, the upstream is read on (not relayed) for up to
    /// this long to its usage report, so the row carries the real tokens; 0 stops at once
    /// and estimates what was generated (flagged).
    #[serde(default = "defaults::disconnect_drain_ms")]
    pub disconnect_drain_ms: u64,
}

impl Default for SpendConfig {
    fn default() -> Self {
        SpendConfig {
            unpriced: Unpriced::default(),
            default_max_output_tokens: defaults::default_max_output_tokens(),
            alert_webhook: None,
            disconnect_drain_ms: defaults::disconnect_drain_ms(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unpriced {
    #[default]
    Zero,
    Refuse,
}

/// How the router retries and cools deployments down.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Further attempts after the first, within a group (each before any byte reached the client).
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// First backoff; doubles per retry, with full jitter, capped by `max_backoff_ms`.
    #[serde(default = "defaults::backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Consecutive failures that put a deployment in cooldown.
    #[serde(default = "defaults::cooldown_failures")]
    pub cooldown_failures: u32,
    /// How long a deployment cools down before one request probes it again.
    #[serde(default = "defaults::cooldown_ms")]
    pub cooldown_ms: u64,
    #[serde(default)]
    pub strategy: Strategy,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            retries: defaults::retries(),
            backoff_ms: defaults::backoff_ms(),
            max_backoff_ms: defaults::max_backoff_ms(),
            cooldown_failures: defaults::cooldown_failures(),
            cooldown_ms: defaults::cooldown_ms(),
            strategy: Strategy::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Weighted,
    LeastBusy,
    LowestLatency,
    LowestCost,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelGroupConfig {
    pub model: String,
    pub strategy: Strategy,
}

/// Why a group failed, for choosing a fallback.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    /// Upstream errors (5xx, rate limits, refused connections, broken responses).
    Error,
    Timeout,
    ContextWindow,
    ContentPolicy,
}

/// Sends requests for `model` to `to` when every condition given holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRuleConfig {
    pub model: String,
    pub to: String,
    /// The prompt is at most this many tokens (estimated, four characters a token).
    pub max_prompt_tokens: Option<u64>,
    /// The prompt is at least this many tokens.
    pub min_prompt_tokens: Option<u64>,
    /// The caller's key is one of these (key ids).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The caller's team is one of these (team ids).
    #[serde(default)]
    pub teams: Vec<String>,
    /// The request carries one of these tags (`x-gateway-tags`, or the key's tags).
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The group whose failures this covers.
    pub model: String,
    /// Groups to try, in order.
    pub to: Vec<String>,
    /// Failures that trigger it (default: error and timeout).
    #[serde(default = "defaults::fallback_on")]
    pub on: Vec<FallbackTrigger>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: Option<f64>,
}

mod defaults {
    pub fn default_max_output_tokens() -> i64 {
        16_384
    }
    pub fn disconnect_drain_ms() -> u64 {
        30_000
    }
    pub fn sso_scopes() -> Vec<String> {
        vec!["email".into(), "profile".into()]
    }
    pub fn sso_groups_claim() -> String {
        "groups".into()
    }
    pub fn sso_default_role() -> String {
        "member".into()
    }
    pub fn sso_label() -> String {
        "Sign in with SSO".into()
    }
    pub fn sso_team_role() -> String {
        "member".into()
    }
    pub fn max_body_bytes() -> usize {
        16 * 1024 * 1024
    }
    pub fn header_read_timeout_ms() -> u64 {
        10_000
    }
    pub fn body_read_timeout_ms() -> u64 {
        30_000
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn max_upstream_body_bytes() -> usize {
        64 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn drain_timeout_ms() -> u64 {
        30_000
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn backoff_ms() -> u64 {
        100
    }
    pub fn max_backoff_ms() -> u64 {
        2_000
    }
    pub fn cooldown_failures() -> u32 {
        3
    }
    pub fn cooldown_ms() -> u64 {
        30_000
    }
    pub fn fallback_on() -> Vec<super::FallbackTrigger> {
        vec![
            super::FallbackTrigger::Error,
            super::FallbackTrigger::Timeout,
        ]
    }
    pub fn first_byte_timeout_ms() -> u64 {
        120_000
    }
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
}

/// A configuration problem, naming the file, the field and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(file: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The environment the loader reads (a function so tests need not mutate the process).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Reads a config file, or builds the demo when `path` is `None`; then applies the
    /// environment and command-line overrides and validates the result.
    pub fn load(
        path: Option<&Path>,
        listen: Option<SocketAddr>,
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let (mut config, file) = match path {
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new(&file, "(file)", format!("cannot read: {e}")))?;
                (Config::parse(&text, &file, env)?, file)
            }
            None => (Config::demo(), "(demo configuration)".to_owned()),
        };
        if let Some(addr) = listen {
            config.server.listen = Some(addr);
        }
        if let Some(url) = env.var("DATABASE_URL") {
            config.server.database_url = Some(url);
        }
        if let Some(key) = env.var("GATEWAY_MASTER_KEY") {
            config.server.master_key = Some(SecretString::from(key));
        }
        if let Some(k) = env.var("GATEWAY_KEY_HASH_SECRET") {
            config.server.key_hash_secret = Some(SecretString::from(k));
        }
        if let Some(pw) = env.var("GATEWAY_ADMIN_PASSWORD") {
            config.server.admin_password = Some(SecretString::from(pw));
        }
        if let Some(url) = env.var("GATEWAY_REDIS_URL") {
            config.server.redis_url = Some(SecretString::from(url));
        }
        if let Some(root) = env
            .var("GATEWAY_SITE_ROOT")
            .or_else(|| env.var("LEPTOS_SITE_ROOT"))
        {
            config.server.site_root = Some(PathBuf::from(root));
        }
        config.validate(&file)?;
        Ok(config)
    }

    /// Parses TOML text: syntax first, then `${VAR}` in string values (so a variable's value
    /// is data and can never change the file's structure), then the typed fields.
    pub fn parse(text: &str, file: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or_else(|| "(syntax)".into());
            ConfigError::new(file, field, e.message().to_owned())
        })?;
        substitute(&mut value, "", file, env)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(top level)".to_owned()
            } else {
                path
            };
            ConfigError::new(file, field, e.inner().to_string())
        })?;
        Ok(config)
    }

    /// The demo: SQLite in the working directory and two `mock` models.
    pub fn demo() -> Config {
        let deployments = DEMO_MODELS
            .iter()
            .map(|m| DeploymentConfig {
                id: None,
                model: (*m).to_owned(),
                provider: ProviderKind::Mock,
                upstream_model: None,
                base_url: None,
                api_key: None,
                weight: 1,
                first_byte_timeout_ms: defaults::first_byte_timeout_ms(),
                idle_timeout_ms: defaults::idle_timeout_ms(),
                api_version: None,
                drop_unsupported_params: false,
                default_max_tokens: None,
                region: None,
                aws_access_key_id: None,
                aws_secret_access_key: None,
                aws_session_token: None,
                connect_timeout_ms: None,
                rpm: None,
                tpm: None,
            })
            .collect();
        Config {
            server: ServerConfig::default(),
            deployments,
            prices: Vec::new(),
            router: RouterConfig::default(),
            spend: SpendConfig::default(),
            model_groups: Vec::new(),
            fallbacks: Vec::new(),
            route_rules: Vec::new(),
            sso: None,
            demo: true,
        }
    }

    fn validate(&mut self, file: &str) -> Result<(), ConfigError> {
        let s = &self.server;
        if let Some(url) = &s.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                file,
                "server.database_url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        match &s.master_key {
            Some(k) if k.expose_secret().len() < 16 => {
                return Err(ConfigError::new(
                    file,
                    "server.master_key",
                    "must have at least 16 characters",
                ));
            }
            None if !self.demo => {
                return Err(ConfigError::new(
                    file,
                    "server.master_key",
                    "is required (set it in the file or with GATEWAY_MASTER_KEY)",
                ));
            }
            _ => {}
        }
        if s.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                file,
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(u) = &s.public_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new(
                file,
                "server.public_url",
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(sso) = &self.sso {
            self.validate_sso(file, sso)?;
        }
        if !(1..=10_000_000).contains(&self.spend.default_max_output_tokens) {
            return Err(ConfigError::new(
                file,
                "spend.default_max_output_tokens",
                "must be from 1 to 10000000",
            ));
        }
        if let Some(u) = &self.spend.alert_webhook
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new(
                file,
                "spend.alert_webhook",
                "must be an http:// or https:// URL",
            ));
        }
        if self.deployments.is_empty() {
            return Err(ConfigError::new(
                file,
                "deployments",
                "at least one [[deployments]] entry is needed",
            ));
        }
        let mut ids = HashSet::new();
        let mut per_model: std::collections::HashMap<String, usize> = Default::default();
        for (i, d) in self.deployments.iter_mut().enumerate() {
            let at = |f: &str| format!("deployments[{i}].{f}");
            if d.model.trim().is_empty() || d.model.len() > 256 {
                return Err(ConfigError::new(
                    file,
                    at("model"),
                    "must be 1 to 256 characters",
                ));
            }
            if d.weight == 0 {
                return Err(ConfigError::new(file, at("weight"), "must be at least 1"));
            }
            if d.first_byte_timeout_ms == 0 || d.idle_timeout_ms == 0 {
                return Err(ConfigError::new(
                    file,
                    at("first_byte_timeout_ms"),
                    "timeouts must be above 0",
                ));
            }
            if d.api_version.is_some() && d.provider != ProviderKind::Azure {
                return Err(ConfigError::new(
                    file,
                    at("api_version"),
                    "is only used by provider \"azure\"",
                ));
            }
            if d.provider != ProviderKind::Bedrock {
                for (name, set) in [
                    ("region", d.region.is_some()),
                    ("aws_access_key_id", d.aws_access_key_id.is_some()),
                    ("aws_secret_access_key", d.aws_secret_access_key.is_some()),
                    ("aws_session_token", d.aws_session_token.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::new(
                            file,
                            at(name),
                            "is only used by provider \"bedrock\"",
                        ));
                    }
                }
            }
            match d.provider {
                ProviderKind::Bedrock => {
                    let region = d.region.as_deref().unwrap_or("");
                    if region.is_empty()
                        || !region
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        return Err(ConfigError::new(
                            file,
                            at("region"),
                            "is required for provider \"bedrock\" (an AWS region such as us-east-1)",
                        ));
                    }
                    for (name, key) in [
                        ("aws_access_key_id", &d.aws_access_key_id),
                        ("aws_secret_access_key", &d.aws_secret_access_key),
                    ] {
                        if key.as_ref().is_none_or(|k| k.expose_secret().is_empty()) {
                            return Err(ConfigError::new(
                                file,
                                at(name),
                                "is required for provider \"bedrock\"",
                            ));
                        }
                    }
                    if d.api_key.is_some() {
                        return Err(ConfigError::new(
                            file,
                            at("api_key"),
                            "is not used by provider \"bedrock\" (use aws_access_key_id and aws_secret_access_key)",
                        ));
                    }
                    if d.base_url.is_none() {
                        d.base_url =
                            Url::parse(&format!("https://bedrock-runtime.{region}.amazonaws.com"))
                                .ok();
                    }
                }
                ProviderKind::Mock => {
                    if d.base_url.is_some() {
                        return Err(ConfigError::new(
                            file,
                            at("base_url"),
                            "is not used by the mock provider",
                        ));
                    }
                    if d.api_key.is_some() {
                        return Err(ConfigError::new(
                            file,
                            at("api_key"),
                            "is not used by the mock provider",
                        ));
                    }
                }
                kind => {
                    let (key_required, default_base, hint) = kind.endpoint_rules();
                    let name = kind.as_str();
                    if key_required
                        && d.api_key
                            .as_ref()
                            .is_none_or(|k| k.expose_secret().is_empty())
                    {
                        return Err(ConfigError::new(
                            file,
                            at("api_key"),
                            format!("is required for provider \"{name}\""),
                        ));
                    }
                    if d.base_url.is_none() {
                        match default_base {
                            Some(u) => d.base_url = Url::parse(u).ok(),
                            None => {
                                return Err(ConfigError::new(
                                    file,
                                    at("base_url"),
                                    format!("is required for provider \"{name}\"{hint}"),
                                ));
                            }
                        }
                    }
                }
            }
            if let Some(u) = &d.base_url {
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(ConfigError::new(
                        file,
                        at("base_url"),
                        "must be an http:// or https:// URL with a host",
                    ));
                }
                if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
                    return Err(ConfigError::new(
                        file,
                        at("base_url"),
                        "must not carry credentials or a query (use api_key)",
                    ));
                }
            }
            let n = per_model.entry(d.model.clone()).or_insert(0);
            *n += 1;
            let id =
                d.id.clone()
                    .unwrap_or_else(|| format!("{}#{}", d.model, *n));
            if !ids.insert(id.clone()) {
                return Err(ConfigError::new(
                    file,
                    at("id"),
                    format!("duplicate deployment id {id:?}"),
                ));
            }
            d.id = Some(id);
        }
        let models: HashSet<&str> = self.deployments.iter().map(|d| d.model.as_str()).collect();
        for (i, g) in self.model_groups.iter().enumerate() {
            if !models.contains(g.model.as_str()) {
                return Err(ConfigError::new(
                    file,
                    format!("model_groups[{i}].model"),
                    format!("no deployment serves {:?}", g.model),
                ));
            }
        }
        for (i, f) in self.fallbacks.iter().enumerate() {
            if !models.contains(f.model.as_str()) {
                return Err(ConfigError::new(
                    file,
                    format!("fallbacks[{i}].model"),
                    format!("no deployment serves {:?}", f.model),
                ));
            }
            if f.to.is_empty() || f.on.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("fallbacks[{i}]"),
                    "`to` and `on` must not be empty",
                ));
            }
            if let Some(t) =
                f.to.iter()
                    .find(|t| !models.contains(t.as_str()) || **t == f.model)
            {
                return Err(ConfigError::new(
                    file,
                    format!("fallbacks[{i}].to"),
                    format!("{t:?} is not another configured model"),
                ));
            }
        }
        for (i, r) in self.route_rules.iter().enumerate() {
            if !models.contains(r.model.as_str())
                || !models.contains(r.to.as_str())
                || r.model == r.to
            {
                return Err(ConfigError::new(
                    file,
                    format!("route_rules[{i}]"),
                    "`model` and `to` must be two different configured models",
                ));
            }
            let conditions = r.max_prompt_tokens.is_some()
                || r.min_prompt_tokens.is_some()
                || !r.keys.is_empty()
                || !r.teams.is_empty()
                || !r.tags.is_empty();
            if !conditions {
                return Err(ConfigError::new(
                    file,
                    format!("route_rules[{i}]"),
                    "needs at least one condition (max_prompt_tokens, min_prompt_tokens, keys, teams or tags)",
                ));
            }
        }
        if self.router.backoff_ms > self.router.max_backoff_ms || self.router.cooldown_failures == 0
        {
            return Err(ConfigError::new(
                file,
                "router",
                "backoff_ms must not exceed max_backoff_ms, and cooldown_failures must be at least 1",
            ));
        }
        let mut priced = HashSet::new();
        for (i, p) in self.prices.iter().enumerate() {
            let at = |f: &str| format!("prices[{i}].{f}");
            for (name, v) in [
                ("input_per_mtok", Some(p.input_per_mtok)),
                ("output_per_mtok", Some(p.output_per_mtok)),
                ("cached_input_per_mtok", p.cached_input_per_mtok),
            ] {
                if let Some(v) = v
                    && (!v.is_finite() || !(0.0..=1_000_000.0).contains(&v))
                {
                    return Err(ConfigError::new(
                        file,
                        at(name),
                        "must be a number from 0 to 1000000 (USD per million tokens)",
                    ));
                }
            }
            if !priced.insert(p.model.clone()) {
                return Err(ConfigError::new(
                    file,
                    at("model"),
                    format!("duplicate price for {:?}", p.model),
                ));
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.unwrap_or_else(|| {
            DEFAULT_LISTEN
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 4000)))
        })
    }

    pub fn database_url(&self) -> &str {
        self.server
            .database_url
            .as_deref()
            .unwrap_or(DEFAULT_DATABASE_URL)
    }

    /// Where the console's built assets are: configured, else `site/` beside the binary,
    /// else `target/site` (a development checkout).
    pub fn site_root(&self) -> PathBuf {
        if let Some(root) = &self.server.site_root {
            return root.clone();
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("site")))
            && beside.is_dir()
        {
            return beside;
        }
        PathBuf::from("target/site")
    }

    fn validate_sso(&self, file: &str, sso: &SsoConfig) -> Result<(), ConfigError> {
        let Ok(issuer) = Url::parse(&sso.issuer) else {
            return Err(ConfigError::new(file, "sso.issuer", "must be a URL"));
        };
        let loopback = issuer
            .host_str()
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        if issuer.scheme() != "https" && !loopback {
            return Err(ConfigError::new(
                file,
                "sso.issuer",
                "must be an https:// URL (http only on loopback, for tests)",
            ));
        }
        if sso.client_id.trim().is_empty() {
            return Err(ConfigError::new(file, "sso.client_id", "must not be empty"));
        }
        if sso.redirect_url.is_none() && self.server.public_url.is_none() {
            return Err(ConfigError::new(
                file,
                "sso.redirect_url",
                "is required unless server.public_url is set",
            ));
        }
        let roles = ["admin", "finance", "auditor", "member"];
        if !roles.contains(&sso.default_role.as_str()) {
            return Err(ConfigError::new(
                file,
                "sso.default_role",
                "is admin, finance, auditor or member",
            ));
        }
        for (i, r) in sso.roles.iter().enumerate() {
            if !roles.contains(&r.role.as_str()) {
                return Err(ConfigError::new(
                    file,
                    format!("sso.roles[{i}].role"),
                    "is admin, finance, auditor or member",
                ));
            }
        }
        for (i, t) in sso.teams.iter().enumerate() {
            if !matches!(t.role.as_str(), "lead" | "member") {
                return Err(ConfigError::new(
                    file,
                    format!("sso.teams[{i}].role"),
                    "is lead or member",
                ));
            }
            if t.team.trim().is_empty() || t.team.len() > 128 {
                return Err(ConfigError::new(
                    file,
                    format!("sso.teams[{i}].team"),
                    "must be 1 to 128 characters",
                ));
            }
        }
        Ok(())
    }

    /// Where the identity provider sends people back after sign-in.
    pub fn sso_redirect_url(&self) -> Option<Url> {
        let sso = self.sso.as_ref()?;
        sso.redirect_url.clone().or_else(|| {
            self.server
                .public_url
                .as_ref()
                .and_then(|u| u.join("/auth/callback").ok())
        })
    }

    pub fn secure_cookies(&self) -> bool {
        self.server
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Replaces `${NAME}` in every string value; `$${` stands for a literal `${`.
fn substitute(
    value: &mut toml::Value,
    path: &str,
    file: &str,
    env: &dyn Env,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains('$') => {
            *s = expand(s, env)
                .map_err(|m| ConfigError::new(file, path.trim_start_matches('.'), m))?;
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute(v, &format!("{path}[{i}]"), file, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                substitute(v, &format!("{path}.{k}"), file, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| "unclosed ${ in value".to_owned())?;
            let name = &inner[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "${{{name}}} is not a valid environment variable name"
                ));
            }
            let v = env
                .var(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }
    fn env(pairs: &[(&'static str, &'static str)]) -> MapEnv {
        MapEnv(pairs.iter().copied().collect())
    }

    const GOOD: &str = r#"
[server]
master_key = "${MK}"

[[deployments]]
model = "gpt-4o-mini"
provider = "openai"
api_key = "${OPENAI_API_KEY}"

[[deployments]]
model = "gpt-4o-mini"
provider = "openai-compatible"
base_url = "http://127.0.0.1:8000/v1"
weight = 3
"#;

    #[test]
    fn substitutes_variables_and_fills_defaults() {
        let e = env(&[
            ("MK", "0123456789abcdef0"),
            ("OPENAI_API_KEY", "sk-\"quoted\"\nvalue"),
        ]);
        let mut c = Config::parse(GOOD, "g.toml", &e).unwrap();
        c.validate("g.toml").unwrap();
        assert_eq!(
            c.deployments[0].api_key.as_ref().unwrap().expose_secret(),
            "sk-\"quoted\"\nvalue"
        );
        assert_eq!(
            c.deployments[0].base_url.as_ref().unwrap().as_str(),
            "https://api.openai.com/v1"
        );
        assert_eq!(c.deployments[0].id.as_deref(), Some("gpt-4o-mini#1"));
        assert_eq!(c.deployments[1].id.as_deref(), Some("gpt-4o-mini#2"));
        assert_eq!(c.deployments[1].weight, 3);
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let text = "[[deployments]]\nmodel = \"m\"\nprovider = \"mock\"\nwieght = 2\n";
        let err = Config::parse(text, "g.toml", &env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("g.toml: deployments[0]"), "{msg}");
        assert!(msg.contains("unknown field `wieght`"), "{msg}");
    }

    #[test]
    fn wrong_type_and_bad_variant_name_the_path() {
        let e = Config::parse(
            "[[deployments]]\nmodel = \"m\"\nprovider = \"mock\"\nweight = \"x\"\n",
            "g.toml",
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.field, "deployments[0].weight");
        let e = Config::parse(
            "[[deployments]]\nmodel = \"m\"\nprovider = \"nope\"\n",
            "g.toml",
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.field, "deployments[0].provider");
        assert!(e.message.contains("unknown variant"), "{}", e.message);
    }

    #[test]
    fn missing_variable_and_syntax_errors_are_named() {
        let e = Config::parse(GOOD, "g.toml", &env(&[("MK", "x")])).unwrap_err();
        assert_eq!(e.field, "deployments[0].api_key");
        assert!(e.message.contains("OPENAI_API_KEY is not set"));
        let e = Config::parse("[server\nlisten = 1", "g.toml", &env(&[])).unwrap_err();
        assert!(e.field.starts_with("line 1"), "{}", e.field);
    }

    #[test]
    fn literal_dollar_escape_and_plain_dollar_survive() {
        assert_eq!(expand("a$${B}c$d", &env(&[])).unwrap(), "a${B}c$d");
        assert!(expand("${1X}", &env(&[])).is_err());
        assert!(expand("${X", &env(&[])).is_err());
    }

    #[test]
    fn semantic_checks_name_the_field() {
        let e = env(&[("MK", "0123456789abcdef0")]);
        let check = |text: &str| {
            let mut c = Config::parse(text, "g.toml", &e).unwrap();
            c.validate("g.toml").unwrap_err()
        };
        let err = check(
            "[server]\nmaster_key=\"${MK}\"\n[[deployments]]\nmodel=\"m\"\nprovider=\"openai\"\n",
        );
        assert_eq!(err.field, "deployments[0].api_key");
        let err = check(
            "[server]\nmaster_key=\"${MK}\"\n[[deployments]]\nmodel=\"m\"\nprovider=\"openai-compatible\"\nbase_url=\"ftp://x\"\n",
        );
        assert_eq!(err.field, "deployments[0].base_url");
        let err = check("[[deployments]]\nmodel=\"m\"\nprovider=\"mock\"\n");
        assert_eq!(err.field, "server.master_key");
        let err = check(
            "[server]\nmaster_key=\"${MK}\"\n[[deployments]]\nid=\"a\"\nmodel=\"m\"\nprovider=\"mock\"\n[[deployments]]\nid=\"a\"\nmodel=\"n\"\nprovider=\"mock\"\n",
        );
        assert_eq!(err.field, "deployments[1].id");
    }

    #[test]
    fn provider_endpoints_default_or_are_required() {
        let e = env(&[("MK", "0123456789abcdef0")]);
        let load = |body: &str| {
            let mut c = Config::parse(
                &format!("[server]\nmaster_key=\"${{MK}}\"\n[[deployments]]\nmodel=\"m\"\n{body}"),
                "g.toml",
                &e,
            )
            .unwrap();
            c.validate("g.toml").map(|()| c)
        };
        let c = load("provider=\"anthropic\"\napi_key=\"k\"\n").unwrap();
        assert_eq!(
            c.deployments[0].base_url.as_ref().unwrap().as_str(),
            "https://api.anthropic.com/"
        );
        let err = load("provider=\"azure\"\napi_key=\"k\"\n").unwrap_err();
        assert_eq!(err.field, "deployments[0].base_url");
        assert!(
            err.message.contains("RESOURCE.openai.azure.com"),
            "{}",
            err.message
        );
        let err = load("provider=\"gemini\"\n").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.message.as_str()),
            (
                "deployments[0].api_key",
                "is required for provider \"gemini\""
            )
        );
        assert!(
            load("provider=\"openai-compatible\"\nbase_url=\"http://127.0.0.1:8000/v1\"\n").is_ok(),
            "no key needed"
        );
    }

    #[test]
    fn overrides_from_env_and_cli() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(
            &p,
            "[server]\nlisten=\"127.0.0.1:1\"\n[[deployments]]\nmodel=\"m\"\nprovider=\"mock\"\n",
        )
        .unwrap();
        let e = env(&[
            ("GATEWAY_MASTER_KEY", "0123456789abcdef0"),
            ("DATABASE_URL", "postgres://x/y"),
        ]);
        let c = Config::load(Some(&p), Some("127.0.0.1:9".parse().unwrap()), &e).unwrap();
        assert_eq!(c.listen_addr().port(), 9);
        assert_eq!(c.database_url(), "postgres://x/y");
        assert!(!c.demo);
        let d = Config::load(None, None, &env(&[])).unwrap();
        assert!(d.demo);
        assert_eq!(d.deployments.len(), 2);
    }

    #[test]
    fn bedrock_needs_region_and_keys() {
        let e = env(&[
            ("MK", "0123456789abcdef0"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]);
        let base =
            "[server]\nmaster_key=\"${MK}\"\n[[deployments]]\nmodel=\"m\"\nprovider=\"bedrock\"\n";
        let keys = "aws_access_key_id=\"${AWS_ACCESS_KEY_ID}\"\naws_secret_access_key=\"${AWS_SECRET_ACCESS_KEY}\"\n";
        let check = |text: String| {
            let mut c = Config::parse(&text, "g.toml", &e)?;
            c.validate("g.toml").map(|()| c)
        };
        let c = check(format!("{base}region=\"eu-west-3\"\n{keys}")).unwrap();
        let d = &c.deployments[0];
        assert_eq!(
            d.base_url.as_ref().unwrap().as_str(),
            "https://bedrock-runtime.eu-west-3.amazonaws.com/"
        );
        assert_eq!(
            d.aws_access_key_id.as_ref().unwrap().expose_secret(),
            "AKIDEXAMPLE"
        );
        let err = check(format!("{base}{keys}")).unwrap_err();
        assert_eq!(err.field, "deployments[0].region");
        let err = check(format!("{base}region=\"EU west\"\n{keys}")).unwrap_err();
        assert_eq!(err.field, "deployments[0].region");
        let err = check(format!(
            "{base}region=\"us-east-1\"\naws_access_key_id=\"${{AWS_ACCESS_KEY_ID}}\"\n"
        ))
        .unwrap_err();
        assert_eq!(err.field, "deployments[0].aws_secret_access_key");
        let err = check(
            "[server]\nmaster_key=\"${MK}\"\n[[deployments]]\nmodel=\"m\"\nprovider=\"mock\"\nregion=\"us-east-1\"\n"
                .to_owned(),
        )
        .unwrap_err();
        assert_eq!(err.field, "deployments[0].region");
    }
}
