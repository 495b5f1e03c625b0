//! Which monitors are known to run, without reading their files: a task per watched monitor sleeps on a
//! pidfd of it and forgets it once it has exited (having written its exit file). Lists that kubelet
//! sends every second use this instead of opening each container's exit file.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use super::client::monitor_exit;
use crate::state::{ReadGuard, Versioned};

/// The IDs whose monitors run and are watched (versioned: a kept list is good while it stays).
#[derive(Debug, Default)]
pub struct Running {
    ids: Arc<Versioned<HashSet<String>>>,
}

impl Running {
    /// Watches the monitor in `state_dir` under `id`; `then` runs once it has exited (at once when it
    /// has already). `contains` stays false when the monitor is gone already or pidfds are not available.
    pub fn watch<F>(&self, id: &str, state_dir: &Path, then: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(exited) = monitor_exit(state_dir) else {
            tokio::spawn(then);
            return;
        };
        self.ids.write().insert(id.to_string());
        let ids = Arc::clone(&self.ids);
        let id = id.to_string();
        tokio::spawn(async move {
            exited.await;
            ids.write().remove(&id);
            then.await;
        });
    }

    /// The watched IDs, locked: a list asks about every record under one lock, not one lock each.
    pub fn watched(&self) -> ReadGuard<'_, HashSet<String>> {
        self.ids.read()
    }
}
