//! The schema's history: the files of `/migrations`, compiled into every binary that opens the
//! database, so a deployment never runs against a schema it does not know.

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Migrations compiled into the binary, in version order. `sqlx::migrate!` needs sqlx's
/// `macros` feature (a second build of sqlx for the proc-macro), so the files are embedded
/// by hand; a test keeps this list equal to the directory. Versions, descriptions and
/// checksums follow sqlx's own rules, so `sqlx migrate` tooling sees the same history.
const MIGRATIONS: &[(&str, &str)] = &[
    ("20251121000000_standalone_tasks.sql", include_str!("../../../migrations/20251121000000_standalone_tasks.sql")),
    ("20261202000000_accounts.sql", include_str!("../../../migrations/20261202000000_accounts.sql")),
    ("20261202010000_credits.sql", include_str!("../../../migrations/20261202010000_credits.sql")),
    ("20261202020000_recharge_codes.sql", include_str!("../../../migrations/20261202020000_recharge_codes.sql")),
    ("20261202030000_quotas.sql", include_str!("../../../migrations/20261202030000_quotas.sql")),
    ("20261202040000_orders.sql", include_str!("../../../migrations/20261202040000_orders.sql")),
    ("20261202050000_uploads.sql", include_str!("../../../migrations/20261202050000_uploads.sql")),
    ("20261202060000_works.sql", include_str!("../../../migrations/20261202060000_works.sql")),
    ("20261202070000_task_management.sql", include_str!("../../../migrations/20261202070000_task_management.sql")),
    ("20261202080000_logs.sql", include_str!("../../../migrations/20261202080000_logs.sql")),
    ("20261202090000_callbacks.sql", include_str!("../../../migrations/20261202090000_callbacks.sql")),
    ("20261202100000_providers.sql", include_str!("../../../migrations/20261202100000_providers.sql")),
    ("20261202110000_square.sql", include_str!("../../../migrations/20261202110000_square.sql")),
    ("20261202120000_assistant.sql", include_str!("../../../migrations/20261202120000_assistant.sql")),
    ("20261202130000_postcards.sql", include_str!("../../../migrations/20261202130000_postcards.sql")),
];

/// The migrator for `/migrations`.
pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(file, sql)| {
            let (version, rest) = file.split_once('_').expect("embedded migration names are <version>_<description>.sql");
            let version: i64 = version.parse().expect("embedded migration version");
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            Migration::new(version, description.into(), MigrationType::Simple, sql.into_sql_str(), sql.starts_with("-- no-transaction"))
        })
        .collect();
    Migrator::with_migrations(migrations)
}

#[doc(hidden)]
pub fn embedded_migration_files() -> Vec<&'static str> {
    MIGRATIONS.iter().map(|(f, _)| *f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_match_the_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = embedded_migration_files().into_iter().map(str::to_owned).collect();
        assert_eq!(embedded, on_disk, "add every file of migrations/ to MIGRATIONS in crates/store/src/migrate.rs");
        for (file, sql) in MIGRATIONS {
            let disk = std::fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(*sql, disk);
        }
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "migration versions must be unique");
    }
}
