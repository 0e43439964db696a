//! The database: SQLite (file, WAL) or PostgreSQL chosen by the URL, migrations applied at
//! start-up, and every query the gateway makes. Queries are written once with `$n`
//! placeholders (both databases accept them) and run on whichever pool is open.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::meter::LedgerRow;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body on whichever pool is open (the body is compiled once per database).
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// Opens a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that read first and then writes fails with
/// `SQLITE_BUSY` (no waiting) when another connection wrote in between.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    + Send;
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error>,
    > + Send {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error>,
    > + Send {
        self.begin()
    }
}

#[macro_use]
pub mod keys;
pub mod budgets;
pub mod people;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub password_hash: Option<String>,
    pub role: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl Store {
    /// Opens the database named by the URL and applies pending migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let store = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            Store::Sqlite(pool)
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            Store::Postgres(pool)
        };
        Ok(store)
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> bool {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()).is_ok())
    }

    pub fn is_closed(&self) -> bool {
        on_pool!(self, p => p.is_closed())
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Appends ledger rows in one transaction; a row whose request id is already there is
    /// skipped, so replaying a batch never counts twice.
    pub async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO ledger (request_id, ts_ms, key_id, team_id, project_id, user_id, endpoint, \
            model, provider, deployment, stream, status, error_type, prompt_tokens, completion_tokens, \
            cached_tokens, usage_estimated, cost_micros, latency_ms, ttfb_ms, tags) \
            VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) \
            ON CONFLICT (request_id) DO NOTHING";
        on_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            for r in rows {
                sqlx::query(SQL)
                    .bind(&r.request_id)
                    .bind(r.ts_ms)
                    .bind(&r.key_id)
                    .bind(&r.team_id)
                    .bind(&r.project_id)
                    .bind(&r.user_id)
                    .bind(r.endpoint)
                    .bind(&r.model)
                    .bind(r.provider)
                    .bind(&r.deployment)
                    .bind(r.stream)
                    .bind(i64::from(r.status))
                    .bind(r.error_type)
                    .bind(r.usage.prompt_tokens)
                    .bind(r.usage.completion_tokens)
                    .bind(r.usage.cached_tokens)
                    .bind(r.usage_estimated)
                    .bind(r.cost_micros)
                    .bind(r.latency_ms)
                    .bind(r.ttfb_ms)
                    .bind(&r.tags)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    /// Requests, failures and tokens in the ledger since `since_ms`.
    pub async fn usage_since(&self, since_ms: i64) -> Result<UsageTotals, sqlx::Error> {
        const SQL: &str = "SELECT COUNT(*), \
            CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT), \
            CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
            CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
            FROM ledger WHERE ts_ms >= $1";
        let (requests, errors, prompt_tokens, completion_tokens): (i64, i64, i64, i64) =
            on_pool!(self, p => sqlx::query_as(SQL).bind(since_ms).fetch_one(p).await)?;
        Ok(UsageTotals {
            requests,
            errors,
            prompt_tokens,
            completion_tokens,
        })
    }

    /// Like [`Store::usage_since`], limited to the given teams' requests and the user's own.
    pub async fn usage_since_scoped(
        &self,
        since_ms: i64,
        team_ids: &[String],
        user_id: &str,
    ) -> Result<UsageTotals, sqlx::Error> {
        let teams: String = (0..team_ids.len())
            .map(|i| format!(", ${}", i + 3))
            .collect();
        // Placeholders only: every value is bound.
        let sql = format!(
            "SELECT COUNT(*), \
            CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT), \
            CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT), \
            CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) \
            FROM ledger WHERE ts_ms >= $1 AND (user_id = $2 OR team_id IN (NULL{teams}))"
        );
        let (requests, errors, prompt_tokens, completion_tokens): (i64, i64, i64, i64) = on_pool!(self, p => {
            let mut q = sqlx::query_as(&sql).bind(since_ms).bind(user_id);
            for t in team_ids {
                q = q.bind(t);
            }
            q.fetch_one(p).await
        })?;
        Ok(UsageTotals {
            requests,
            errors,
            prompt_tokens,
            completion_tokens,
        })
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, sqlx::Error> {
        const SQL: &str = "SELECT id, username, password_hash, role FROM users WHERE username = $1 AND is_active = $2";
        on_pool!(self, p => sqlx::query_as::<_, UserRow>(SQL).bind(username).bind(true).fetch_optional(p).await)
    }

    pub async fn admin_exists(&self) -> Result<bool, sqlx::Error> {
        const SQL: &str =
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND password_hash IS NOT NULL";
        let (n,): (i64,) = on_pool!(self, p => sqlx::query_as(SQL).fetch_one(p).await)?;
        Ok(n > 0)
    }

    /// Creates the local admin, or replaces its password; returns its id.
    pub async fn upsert_local_admin(
        &self,
        username: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<String, sqlx::Error> {
        const SQL: &str = "INSERT INTO users (id, username, password_hash, role, is_active, created_at) \
            VALUES ($1, $2, $3, 'admin', $4, $5) \
            ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, role = 'admin' \
            RETURNING id";
        let id = uuid::Uuid::now_v7().to_string();
        let (id,): (String,) = on_pool!(self, p => sqlx::query_as(SQL)
            .bind(&id).bind(username).bind(hash).bind(true).bind(now_ms)
            .fetch_one(p).await)?;
        Ok(id)
    }

    /// Creates the local admin only if no admin with a password exists yet (first-run
    /// setup); true when this call created it. Atomic, so two racing forms cannot both win.
    pub async fn create_first_admin(
        &self,
        username: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        const SQL: &str = "INSERT INTO users (id, username, password_hash, role, is_active, created_at) \
            SELECT $1, $2, $3, 'admin', $4, $5 \
            WHERE NOT EXISTS (SELECT 1 FROM users WHERE role = 'admin' AND password_hash IS NOT NULL) \
            ON CONFLICT (username) DO NOTHING";
        let id = uuid::Uuid::now_v7().to_string();
        let done = on_pool!(self, p => sqlx::query(SQL)
            .bind(&id).bind(username).bind(hash).bind(true).bind(now_ms)
            .execute(p).await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $3, $4)";
        on_pool!(self, p => sqlx::query(SQL).bind(id_hash).bind(user_id).bind(now_ms).bind(expires_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The user of a live session: not past its absolute expiry and seen within `idle_ms`.
    pub async fn session_user(
        &self,
        id_hash: &str,
        now_ms: i64,
        idle_ms: i64,
    ) -> Result<Option<(UserRow, i64)>, sqlx::Error> {
        const SQL: &str = "SELECT u.id, u.username, u.password_hash, u.role, s.last_seen_at \
            FROM sessions s JOIN users u ON u.id = s.user_id \
            WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3 AND u.is_active = $4";
        let row: Option<(String, String, Option<String>, String, i64)> = on_pool!(self, p => sqlx::query_as(SQL)
            .bind(id_hash).bind(now_ms).bind(now_ms - idle_ms).bind(true)
            .fetch_optional(p).await)?;
        Ok(row.map(|(id, username, password_hash, role, seen)| {
            (
                UserRow {
                    id,
                    username,
                    password_hash,
                    role,
                },
                seen,
            )
        }))
    }

    pub async fn touch_session(&self, id_hash: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1";
        on_pool!(self, p => sqlx::query(SQL).bind(id_hash).bind(now_ms).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<(), sqlx::Error> {
        on_pool!(self, p => sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }
}
