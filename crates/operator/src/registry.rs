//! The workers of every pool, as fleets (health, in-flight, least-loaded pick, circuit
//! breaker) shared between the controllers: the GpuPool controller keeps each fleet's
//! membership in line with the pool's pods and external endpoints; the EnhanceTask controller
//! picks workers from it.

use std::collections::HashMap;
use std::sync::RwLock;

use purrify_inference::client::{Fleet, FleetConfig};

/// A pool, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub namespace: String,
    pub name: String,
}

impl PoolKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Default)]
pub struct Registry {
    config: FleetConfig,
    pools: RwLock<HashMap<PoolKey, Fleet>>,
}

impl Registry {
    pub fn new(config: FleetConfig) -> Self {
        Self { config, pools: RwLock::new(HashMap::new()) }
    }

    /// The pool's fleet, if the pool is known.
    pub fn fleet(&self, pool: &PoolKey) -> Option<Fleet> {
        self.pools.read().unwrap_or_else(|p| p.into_inner()).get(pool).cloned()
    }

    /// The pool's fleet, created empty on first use.
    pub fn ensure(&self, pool: &PoolKey) -> Fleet {
        if let Some(f) = self.fleet(pool) {
            return f;
        }
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        pools.entry(pool.clone()).or_insert_with(|| Fleet::new(self.config.clone()).expect("default fleet configuration is valid")).clone()
    }

    /// Forgets a deleted pool.
    pub fn remove(&self, pool: &PoolKey) -> Option<Fleet> {
        self.pools.write().unwrap_or_else(|p| p.into_inner()).remove(pool)
    }

    pub fn pools(&self) -> Vec<PoolKey> {
        let mut keys: Vec<_> = self.pools.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleets_are_shared_per_pool() {
        let r = Registry::default();
        let k = PoolKey::new("ns", "default");
        assert!(r.fleet(&k).is_none());
        let a = r.ensure(&k);
        a.upsert(purrify_inference::client::WorkerSpec::new("http://10.0.0.1:8000")).unwrap();
        assert_eq!(r.fleet(&k).unwrap().len(), 1, "the same fleet is returned");
        assert_eq!(r.pools(), vec![k.clone()]);
        assert!(r.remove(&k).is_some());
        assert!(r.pools().is_empty());
    }
}
