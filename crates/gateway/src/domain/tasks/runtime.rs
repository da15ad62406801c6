//! The task settings an admin changes at run time (seeds 001/002 `/api/admin/config`):
//! `max_concurrent_tasks_per_user`, `default_task_timeout`, `maintenance_mode`, the price of
//! each task kind and the recharge packages. Stored in the `settings` table (packages in
//! theirs); read through a short cache, so the maintenance check and every task submission
//! cost no query, and a change reaches every replica within [`CACHE_TTL`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use purrify_store::{Db, Package};
use serde_json::{Value, json};

use crate::domain::credits::{MAX_AMOUNT, PRICED_KINDS, hundredths};
use crate::domain::{DomainError, DomainResult};

/// How long a read of the settings is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
pub const MAX_CONCURRENT: &str = "max_concurrent_tasks_per_user";
pub const DEFAULT_TIMEOUT: &str = "default_task_timeout";
pub const MAINTENANCE: &str = "maintenance_mode";
pub const PACKAGES: &str = "packages";
/// Bounds of `default_task_timeout`, in seconds.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
/// Largest `max_concurrent_tasks_per_user` (0 means no limit).
pub const MAX_CONCURRENT_LIMIT: u32 = 10_000;

/// The settings as tasks and the maintenance check use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// 0: no limit.
    pub max_concurrent_tasks_per_user: u32,
    /// `None`: the configured default (`--task-deadline`).
    pub default_task_timeout: Option<Duration>,
    pub maintenance_mode: bool,
}

/// One typed change of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigChange {
    MaxConcurrent(u32),
    DefaultTimeout(u64),
    Maintenance(bool),
    Price { kind: &'static str, hundredths: i64 },
    Packages(Vec<Package>),
}

impl ConfigChange {
    /// Parses `value` as the key's type; an unknown key is `NotFound`, a bad value `Invalid`.
    pub fn parse(key: &str, value: &Value) -> DomainResult<Self> {
        match key {
            MAX_CONCURRENT => {
                let n = value.as_u64().filter(|n| *n <= u64::from(MAX_CONCURRENT_LIMIT)).ok_or_else(|| {
                    DomainError::invalid(MAX_CONCURRENT, format!("must be a whole number from 0 (no limit) to {MAX_CONCURRENT_LIMIT}"))
                })?;
                Ok(Self::MaxConcurrent(n as u32))
            }
            DEFAULT_TIMEOUT => {
                let n = value.as_u64().filter(|n| TIMEOUT_RANGE.contains(n)).ok_or_else(|| {
                    DomainError::invalid(
                        DEFAULT_TIMEOUT,
                        format!("must be a whole number of seconds from {} to {}", TIMEOUT_RANGE.start(), TIMEOUT_RANGE.end()),
                    )
                })?;
                Ok(Self::DefaultTimeout(n))
            }
            MAINTENANCE => value.as_bool().map(Self::Maintenance).ok_or_else(|| DomainError::invalid(MAINTENANCE, "must be true or false")),
            PACKAGES => Ok(Self::Packages(parse_packages(value)?)),
            _ => {
                let Some(kind) = key.strip_prefix("price_").and_then(|k| PRICED_KINDS.iter().find(|p| **p == k)) else {
                    return Err(DomainError::NotFound(format!("no setting {key}")));
                };
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => return Err(DomainError::invalid("value", "must be a number of credits like 1.50")),
                };
                let hundredths = hundredths(&text).map_err(|m| DomainError::invalid("value", m))?;
                if !(0..=MAX_AMOUNT).contains(&hundredths) {
                    return Err(DomainError::invalid("value", "must be between 0 and 10,000,000 credits"));
                }
                Ok(Self::Price { kind, hundredths })
            }
        }
    }

    /// The key this change sets.
    pub fn key(&self) -> String {
        match self {
            Self::MaxConcurrent(_) => MAX_CONCURRENT.into(),
            Self::DefaultTimeout(_) => DEFAULT_TIMEOUT.into(),
            Self::Maintenance(_) => MAINTENANCE.into(),
            Self::Price { kind, .. } => format!("price_{kind}"),
            Self::Packages(_) => PACKAGES.into(),
        }
    }
}

fn package_field<'a>(p: &'a Value, i: usize, name: &str) -> DomainResult<&'a Value> {
    p.get(name).ok_or_else(|| DomainError::invalid(PACKAGES, format!("package {i}: `{name}` is missing")))
}

fn decimal_field(p: &Value, i: usize, name: &str, required: bool) -> DomainResult<i64> {
    let v = match p.get(name) {
        None | Some(Value::Null) if !required => return Ok(0),
        _ => package_field(p, i, name)?,
    };
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err(DomainError::invalid(PACKAGES, format!("package {i}: `{name}` must be a number"))),
    };
    let h = hundredths(&text).map_err(|m| DomainError::invalid(PACKAGES, format!("package {i}: `{name}`: {m}")))?;
    if !(0..=MAX_AMOUNT).contains(&h) || (required && h == 0) {
        return Err(DomainError::invalid(PACKAGES, format!("package {i}: `{name}` is out of range")));
    }
    Ok(h)
}

/// `[{id, name, price (yuan), credits, bonus?, active?, sort?}, ...]`.
fn parse_packages(value: &Value) -> DomainResult<Vec<Package>> {
    let list = value.as_array().filter(|l| !l.is_empty() && l.len() <= 50).ok_or_else(|| {
        DomainError::invalid(PACKAGES, "must be a list of 1 to 50 packages {id, name, price, credits, bonus, active, sort}")
    })?;
    let mut out: Vec<Package> = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let id = package_field(p, i, "id")?.as_str().unwrap_or_default().to_string();
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(DomainError::invalid(PACKAGES, format!("package {i}: `id` must be 1-32 characters of [A-Za-z0-9_-]")));
        }
        if out.iter().any(|o| o.id == id) {
            return Err(DomainError::invalid(PACKAGES, format!("package id {id} appears twice")));
        }
        let name = package_field(p, i, "name")?.as_str().map(str::trim).unwrap_or_default().to_string();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(DomainError::invalid(PACKAGES, format!("package {i}: `name` must be 1-64 characters")));
        }
        let active = match p.get("active") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_bool().ok_or_else(|| DomainError::invalid(PACKAGES, format!("package {i}: `active` must be true or false")))?,
        };
        let sort = match p.get("sort") {
            None | Some(Value::Null) => (i as i64 + 1) * 10,
            Some(v) => v.as_i64().ok_or_else(|| DomainError::invalid(PACKAGES, format!("package {i}: `sort` must be a whole number")))?,
        };
        out.push(Package {
            id,
            name,
            price_fen: decimal_field(p, i, "price", true)?,
            credits: decimal_field(p, i, "credits", true)?,
            bonus: decimal_field(p, i, "bonus", false)?,
            active,
            sort,
        });
    }
    Ok(out)
}

/// The cached settings.
pub struct RuntimeSettings {
    db: Db,
    cache: Mutex<Option<(Instant, Snapshot)>>,
}

impl RuntimeSettings {
    pub fn new(db: Db) -> Self {
        Self { db, cache: Mutex::new(None) }
    }

    /// The settings, at most [`CACHE_TTL`] old.
    pub async fn snapshot(&self) -> DomainResult<Snapshot> {
        if let Some((at, snap)) = *self.cache.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(snap);
        }
        let number = |name: &'static str, v: Option<String>| -> DomainResult<Option<u64>> {
            v.map(|v| v.parse::<u64>().map_err(|_| DomainError::Internal(format!("setting {name} is not a whole number: {v:?}"))))
                .transpose()
        };
        let snap = Snapshot {
            max_concurrent_tasks_per_user: number(MAX_CONCURRENT, self.db.get_setting(MAX_CONCURRENT).await?)?
                .map_or(0, |n| u32::try_from(n).unwrap_or(MAX_CONCURRENT_LIMIT)),
            default_task_timeout: number(DEFAULT_TIMEOUT, self.db.get_setting(DEFAULT_TIMEOUT).await?)?.map(Duration::from_secs),
            maintenance_mode: self.db.get_bool_setting(MAINTENANCE).await?.unwrap_or(false),
        };
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), snap));
        Ok(snap)
    }

    /// Applies every change or none, then drops the cache so this replica sees them at once.
    pub async fn apply(&self, changes: &[ConfigChange]) -> DomainResult<()> {
        let mut pairs = Vec::new();
        let mut packages = None;
        for c in changes {
            let value = match c {
                ConfigChange::MaxConcurrent(n) => n.to_string(),
                ConfigChange::DefaultTimeout(n) => n.to_string(),
                ConfigChange::Maintenance(b) => b.to_string(),
                ConfigChange::Price { hundredths, .. } => hundredths.to_string(),
                ConfigChange::Packages(p) => {
                    packages = Some(p.as_slice());
                    continue;
                }
            };
            pairs.push((c.key(), value));
        }
        self.db.save_settings(&pairs, packages).await?;
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        Ok(())
    }

    /// Every key with its current value (prices as decimal credits, packages as a list).
    pub async fn items(&self, default_timeout: Duration) -> DomainResult<Vec<(String, Value, &'static str)>> {
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = None;
        let s = self.snapshot().await?;
        let mut items = Vec::new();
        for kind in PRICED_KINDS {
            let price = match self.db.get_setting(&purrify_store::settings::keys::price(kind)).await? {
                None => 0,
                Some(v) => v.parse::<i64>().map_err(|_| DomainError::Internal(format!("setting price_{kind} is not an integer: {v:?}")))?,
            };
            items.push((format!("price_{kind}"), json!(price as f64 / 100.0), "credits charged per task (0: free)"));
        }
        items.extend([
            (
                MAX_CONCURRENT.to_string(),
                json!(s.max_concurrent_tasks_per_user),
                "tasks a user may have queued or running at once (0: no limit)",
            ),
            (
                DEFAULT_TIMEOUT.to_string(),
                json!(s.default_task_timeout.unwrap_or(default_timeout).as_secs()),
                "seconds from submission to result before a new task fails",
            ),
            (MAINTENANCE.to_string(), json!(s.maintenance_mode), "when true, writes by non-admins answer 503"),
        ]);
        let packages: Vec<Value> = self
            .db
            .packages(false)
            .await?
            .iter()
            .map(|p| {
                json!({"id": p.id, "name": p.name, "price": p.price_fen as f64 / 100.0, "credits": p.credits as f64 / 100.0,
                       "bonus": p.bonus as f64 / 100.0, "active": p.active, "sort": p.sort})
            })
            .collect();
        items.push((PACKAGES.to_string(), Value::Array(packages), "recharge packages (price in yuan, credits and bonus in credits)"));
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert_eq!(ConfigChange::parse(MAX_CONCURRENT, &json!(5)).unwrap(), ConfigChange::MaxConcurrent(5));
        assert!(ConfigChange::parse(MAX_CONCURRENT, &json!(-1)).is_err());
        assert!(ConfigChange::parse(MAX_CONCURRENT, &json!("5")).is_err());
        assert_eq!(ConfigChange::parse(DEFAULT_TIMEOUT, &json!(3600)).unwrap(), ConfigChange::DefaultTimeout(3600));
        assert!(ConfigChange::parse(DEFAULT_TIMEOUT, &json!(1)).is_err());
        assert_eq!(ConfigChange::parse(MAINTENANCE, &json!(true)).unwrap(), ConfigChange::Maintenance(true));
        assert!(ConfigChange::parse(MAINTENANCE, &json!("yes")).is_err());
        assert_eq!(ConfigChange::parse("price_enhance", &json!("1.50")).unwrap(), ConfigChange::Price { kind: "enhance", hundredths: 150 });
        assert!(matches!(ConfigChange::parse("price_video", &json!(1)), Err(DomainError::NotFound(_))));
        assert!(matches!(ConfigChange::parse("nope", &json!(1)), Err(DomainError::NotFound(_))));
    }

    #[test]
    fn packages_are_checked_whole() {
        let ok = ConfigChange::parse(PACKAGES, &json!([{"id": "basic", "name": "60 credits", "price": 6, "credits": 60}])).unwrap();
        let ConfigChange::Packages(p) = ok else { panic!() };
        assert_eq!((p[0].price_fen, p[0].credits, p[0].bonus, p[0].active, p[0].sort), (600, 6000, 0, true, 10));
        for bad in [
            json!([]),
            json!([{"id": "a b", "name": "x", "price": 1, "credits": 1}]),
            json!([{"id": "a", "name": "", "price": 1, "credits": 1}]),
            json!([{"id": "a", "name": "x", "price": 0, "credits": 1}]),
            json!([{"id": "a", "name": "x", "price": 1}]),
            json!([{"id": "a", "name": "x", "price": 1, "credits": 1}, {"id": "a", "name": "y", "price": 1, "credits": 1}]),
        ] {
            assert!(ConfigChange::parse(PACKAGES, &bad).is_err(), "{bad}");
        }
    }
}
