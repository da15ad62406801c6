//! Throwaway databases for tests (feature `testing`): every scenario runs on SQLite and on
//! PostgreSQL through one harness, here and in the crates that build on the store.

use sqlx::{Connection, Executor};

use crate::{Db, DbKind};

/// The PostgreSQL admin URL tests create their databases through (`make test` sets it).
pub const PG_ENV: &str = "PURRIFY_TEST_POSTGRES_URL";

/// Runs one async scenario `fn name(TestDb)` against SQLite and against PostgreSQL, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::testing::TestDb::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::testing::TestDb::postgres().await).await;
            }
        }
    )*};
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test: a temp-file SQLite database, or a PostgreSQL
/// database created through the admin URL and dropped (forcibly) when this is dropped.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => Self::sqlite().await,
            Backend::Postgres => Self::postgres().await,
        }
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        // A directory that does not exist yet: connect must create it and the file.
        let path = dir.path().join("nested").join("gateway.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect(&url).await.expect("sqlite database opens");
        assert_eq!(db.kind(), DbKind::Sqlite);
        TestDb { db, url, _dir: Some(dir), pg: None }
    }

    pub async fn postgres() -> TestDb {
        let (url, admin, name) = Self::create_postgres().await;
        let db = Db::connect(&url).await.expect("postgres database opens");
        assert_eq!(db.kind(), DbKind::Postgres);
        TestDb { db, url, _dir: None, pg: Some((admin, name)) }
    }

    /// A new, empty PostgreSQL database (not migrated): its URL, the admin URL and its name.
    async fn create_postgres() -> (String, String, String) {
        let admin = std::env::var(PG_ENV).unwrap_or_default();
        assert!(
            !admin.is_empty(),
            "{PG_ENV} is not set: run the tests with `make test`, or export \
             {PG_ENV}=\"$(tools/postgres/start.sh)\" (PostgreSQL variants never skip)"
        );
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {PG_ENV} (run tools/postgres/start.sh): {e}"));
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("CREATE DATABASE (the role needs CREATEDB)");
        conn.close().await.ok();
        (with_database(&admin, &name), admin, name)
    }

    /// A second, independent connection pool on the same database (a restarted process).
    pub async fn reopen(&self) -> Db {
        Db::connect(&self.url).await.expect("database reopens")
    }

    pub fn backend(&self) -> Backend {
        match self.db.kind() {
            DbKind::Sqlite => Backend::Sqlite,
            DbKind::Postgres => Backend::Postgres,
        }
    }
}

/// A PostgreSQL database that exists for one test, handed out as a URL only (for processes
/// that open it themselves); dropped with this value.
pub struct TestPostgresUrl {
    pub url: String,
    admin: String,
    name: String,
}

impl TestPostgresUrl {
    pub async fn create() -> Self {
        let (url, admin, name) = TestDb::create_postgres().await;
        Self { url, admin, name }
    }
}

impl Drop for TestPostgresUrl {
    fn drop(&mut self) {
        drop_database(std::mem::take(&mut self.admin), std::mem::take(&mut self.name));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            drop_database(admin, name);
        }
    }
}

fn drop_database(admin: String, name: String) {
    // Drop runs outside any runtime guarantee (and during panics): use a thread of its own
    // with a small runtime.
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
                let _ = conn.close().await;
            }
        });
    })
    .join();
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("PostgreSQL URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A plain account (`<id>@example.com`, role user, no password) for tests of tables that
/// reference users.
pub async fn create_user(db: &Db, id: &str) -> crate::User {
    db.create_user(&crate::NewUser {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        password_hash: None,
        wechat: None,
        username: None,
        full_name: None,
        role: crate::Role::User,
    })
    .await
    .expect("test user")
}

/// A worker's result as the dispatcher records it, for tests that finish tasks by hand.
pub fn job_result() -> purrify_api::JobResult {
    purrify_api::JobResult {
        output_uri: "file:///out".into(),
        content_type: "image/jpeg".into(),
        width: 8,
        height: 8,
        bytes: 10,
        faces: 0,
        face_restoration: purrify_api::FaceRestoration::NotConfigured,
        model: "realesr-animevideov3-x2".into(),
        elapsed_ms: 10,
    }
}
