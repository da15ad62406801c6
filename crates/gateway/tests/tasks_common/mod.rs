//! Shared support of the `tasks_*` tests: throwaway SQLite and PostgreSQL databases, and the
//! scriptable fake inference worker of purrify-testkit (shared with the operator's tests).

use purrify_gateway::tasks::{Db, DbKind};
use purrify_inference::client::Fleet;
use sqlx::{Connection, Executor};

pub const PG_ENV: &str = "PURRIFY_TEST_POSTGRES_URL";

/// Runs one async scenario `fn name(TestDb)` against SQLite and against PostgreSQL, as
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::tasks_common::TestDb::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::tasks_common::TestDb::postgres().await).await;
            }
        }
    )*};
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
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet: connect must create it and the file.
        let path = dir.path().join("nested").join("gateway.db");
        let url = format!("sqlite://{}", path.display());
        let db = Db::connect(&url).await.expect("sqlite database opens");
        assert_eq!(db.kind(), DbKind::Sqlite);
        TestDb { db, url, _dir: Some(dir), pg: None }
    }

    pub async fn postgres() -> TestDb {
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
        let url = with_database(&admin, &name);
        let db = Db::connect(&url).await.expect("postgres database opens");
        assert_eq!(db.kind(), DbKind::Postgres);
        TestDb { db, url, _dir: None, pg: Some((admin, name)) }
    }

    /// A second, independent connection pool on the same database (a restarted gateway).
    pub async fn reopen(&self) -> Db {
        Db::connect(&self.url).await.expect("database reopens")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee (and during panics): use a thread of its
        // own with a small runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("PostgreSQL URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A fleet with short client timeouts, so lost workers are noticed quickly.
pub fn test_fleet() -> Fleet {
    Fleet::new(purrify_testkit::fake_worker::fleet_config()).unwrap()
}
