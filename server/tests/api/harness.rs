//! `spawn_app()`: a gateway on port 0 with its own database and mock upstream.

use std::time::Duration;

use gateway::config::{Config, Env};
use gateway::startup::Application;
use gateway::store::Store;
use gateway::testkit::mock_upstream::MockUpstream;
use tokio::sync::oneshot;

pub const MASTER_KEY: &str = "test-master-key-0123456789";
pub const UPSTREAM_KEY: &str = "sk-upstream-SECRET-4f9c2e71aa";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `name::sqlite` and `name::postgres` tests from `async fn name(Backend)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            }
        )*
    };
}

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

pub struct TestApp {
    pub url: String,
    pub mock: MockUpstream,
    pub http: reqwest::Client,
    pub store: Store,
    pg_db: Option<String>,
    config_path: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

async fn fresh_database(backend: Backend, dir: &std::path::Path) -> (String, Option<String>) {
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.join("gateway.db").display()),
            None,
        ),
        Backend::Postgres => {
            let name = format!("gwt_{}", uuid::Uuid::new_v4().simple());
            let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432");
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&admin)
                .await
                .expect("create database");
            admin.close().await;
            (
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
                Some(name),
            )
        }
    }
}

/// The standard test configuration: `gpt-test` (openai-compatible, priced) and
/// `embed-test` on the mock upstream, `local` on the built-in mock provider. `extra` is
/// appended (more deployments or prices), with `@MOCK@` and `@KEY@` standing for the mock
/// upstream's base URL and key, and `@ROOT@` for its root URL (no `/v1`, as Gemini wants).
/// Lines of `extra` starting with `@SERVER@ ` go into the `[server]` table instead.
pub fn config_text(mock_base: &str, db_url: &str, extra: &str, with_admin: bool) -> String {
    let extra = extra
        .replace("@MOCK@", mock_base)
        .replace("@ROOT@", mock_base.trim_end_matches("/v1"))
        .replace("@KEY@", UPSTREAM_KEY);
    let (server_lines, rest): (Vec<&str>, Vec<&str>) =
        extra.lines().partition(|l| l.starts_with("@SERVER@ "));
    let extra = rest.join("\n");
    let mut admin = if with_admin {
        format!("admin_password = \"{ADMIN_PASSWORD}\"")
    } else {
        String::new()
    };
    for l in server_lines {
        admin.push('\n');
        admin.push_str(l.trim_start_matches("@SERVER@ "));
    }
    format!(
        r#"
[server]
master_key = "{MASTER_KEY}"
database_url = "{db_url}"
listen = "127.0.0.1:0"
{admin}
max_body_bytes = 65536
header_read_timeout_ms = 500
log_format = "text"

[[deployments]]
model = "gpt-test"
provider = "openai-compatible"
upstream_model = "upstream-gpt"
base_url = "{mock_base}"
api_key = "{UPSTREAM_KEY}"

[[deployments]]
model = "embed-test"
provider = "openai-compatible"
base_url = "{mock_base}"
api_key = "{UPSTREAM_KEY}"

[[deployments]]
model = "local"
provider = "mock"

[[prices]]
model = "gpt-test"
input_per_mtok = 2.5
output_per_mtok = 10.0
{extra}
"#
    )
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, "").await
}

pub async fn spawn_app_with(backend: Backend, extra: &str) -> TestApp {
    spawn_app_opts(backend, extra, true).await
}

/// `with_admin: false` leaves the local admin to the first-run setup form.
/// The gateway's warnings and errors, in the output of the test that caused them (shown
/// when it fails): a flaky failure then says what the gateway saw.
fn capture_gateway_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ))
            .with_test_writer()
            .try_init();
    });
}

pub async fn spawn_app_opts(backend: Backend, extra: &str, with_admin: bool) -> TestApp {
    capture_gateway_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockUpstream::start(
        "127.0.0.1:0".parse().expect("addr"),
        Some(UPSTREAM_KEY.to_owned()),
    )
    .await
    .expect("mock upstream");
    let (db_url, pg_db) = fresh_database(backend, dir.path()).await;
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        config_text(&mock.base_url(), &db_url, extra, with_admin),
    )
    .expect("write config");
    let config = Config::load(Some(&path), None, &NoEnv).expect("valid config");
    let app = Application::build(config).await.expect("gateway starts");
    let url = format!("http://127.0.0.1:{}", app.port());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let store = Store::connect(&db_url).await.expect("test store");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    TestApp {
        url,
        mock,
        http,
        store,
        pg_db,
        config_path: path,
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

/// A second gateway instance on the same configuration and database.
pub struct Sibling {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Sibling {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("clean stop");
        }
    }
}

impl TestApp {
    pub async fn sibling(&self) -> Sibling {
        let config = Config::load(Some(&self.config_path), None, &NoEnv).expect("valid config");
        let app = Application::build(config)
            .await
            .expect("second gateway starts");
        let url = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Sibling {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(MASTER_KEY)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(MASTER_KEY)
    }

    pub async fn chat(&self, body: serde_json::Value) -> reqwest::Response {
        self.post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Stops the gateway (drain + ledger flush) and waits for it.
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("clean stop");
        }
    }

    /// Stops the gateway and removes its PostgreSQL database.
    pub async fn finish(mut self) {
        self.stop().await;
        self.store.close().await;
        if let Some(name) = self.pg_db.take() {
            let admin = sqlx::PgPool::connect(PG_ADMIN_URL)
                .await
                .expect("admin connection");
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }

    /// Ledger rows, oldest first, once every row for `expected` requests has landed.
    pub async fn ledger_rows(&self, expected: usize) -> Vec<LedgerView> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = ledger_view(&self.store).await;
            if rows.len() >= expected || tokio::time::Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerView {
    pub request_id: String,
    pub key_id: Option<String>,
    pub team_id: Option<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    pub endpoint: String,
    pub model: String,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    pub stream: bool,
    pub status: i64,
    pub error_type: Option<String>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub usage_estimated: bool,
    pub cost_micros: i64,
    pub tags: String,
}

pub async fn ledger_view(store: &Store) -> Vec<LedgerView> {
    const SQL: &str = "SELECT request_id, key_id, team_id, project_id, user_id, endpoint, model, provider, deployment, stream, status, error_type, \
        prompt_tokens, completion_tokens, cached_tokens, usage_estimated, cost_micros, tags \
        FROM ledger ORDER BY ts_ms, request_id";
    match store {
        Store::Sqlite(p) => sqlx::query_as(SQL)
            .fetch_all(p)
            .await
            .expect("ledger query"),
        Store::Postgres(p) => sqlx::query_as(SQL)
            .fetch_all(p)
            .await
            .expect("ledger query"),
    }
}

/// A management-API call with the master key: (status, JSON body or null).
pub async fn admin_call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = app
        .http
        .request(method, format!("{}/admin/v1{path}", app.url))
        .bearer_auth(MASTER_KEY)
        .json(&body)
        .send()
        .await
        .expect("request");
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

pub fn user(content: &str) -> serde_json::Value {
    serde_json::json!([{"role": "user", "content": content}])
}
