//! Per-ID async locks: one pod's or container's slow work never blocks another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A set of named locks, created on demand and dropped when nobody holds or waits for them.
#[derive(Default)]
pub struct Locks {
    map: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds the lock of one ID until dropped.
pub struct Guard {
    _guard: OwnedMutexGuard<()>,
}

impl Locks {
    /// Waits for and takes the lock of `id`.
    pub async fn lock(&self, id: &str) -> Guard {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Drop entries nobody uses any more, so the map does not grow with every ID ever seen.
            if map.len() > 256 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            map.entry(id.to_string()).or_default().clone()
        };
        Guard {
            _guard: m.lock_owned().await,
        }
    }
}
