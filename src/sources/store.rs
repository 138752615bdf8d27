//! [`SourceStore`]: what a source may keep in the pipeline's state database — its own durable
//! keys and the ids of the indicators the state holds — through the pipeline's own connection.
//! A source never opens the database: one connection means no lock contention between the
//! pipeline's transactions and a source's notes, and the state's schema stays the pipeline's.

use crate::state::{State, StateError};
use std::sync::{Arc, Mutex};

/// A narrow handle on the state for a source; cheap to clone.
#[derive(Clone)]
pub struct SourceStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SourceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceStore").finish_non_exhaustive()
    }
}

impl SourceStore {
    /// A handle on `state` (the pipeline's connection).
    pub fn new(state: Arc<Mutex<State>>) -> Self {
        SourceStore { state }
    }

    /// Runs `f` on the state off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            let guard = state.lock().unwrap_or_else(|e| e.into_inner());
            f(&guard)
        })
        .await
        .map_err(|e| StateError::Task(e.to_string()))?
    }

    /// The value the source stored under `key`.
    pub async fn get(&self, key: &'static str) -> Result<Option<String>, StateError> {
        self.with(move |s| s.kv_get(key)).await
    }

    /// Stores `values` (key, value) in one go.
    pub async fn set(&self, values: Vec<(&'static str, String)>) -> Result<(), StateError> {
        self.with(move |s| {
            for (key, value) in &values {
                s.kv_set(key, value)?;
            }
            Ok(())
        })
        .await
    }

    /// The ids of every indicator the state holds IOCs for (whatever source sent them).
    pub async fn held_indicator_ids(&self) -> Result<Vec<String>, StateError> {
        self.with(|s| s.indicator_ids()).await
    }
}
