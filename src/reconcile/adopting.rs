//! The adopting mode of a sink that cannot be listed (Sekoia: its documented API only searches by
//! `term`), so `reconcile --adopt` cannot read back what it holds. Instead `--adopt` records the
//! mode in the state, and while it is on the sink is wrapped: before a create is sent, the sink's
//! own crash-recovery lookup ([`Sink::resolve`]: a term search for a live indicator of the value
//! with iocsync's marker) is asked, and a create it finds is settled with the found id instead of
//! being imported a second time. `reconcile --apply` ends the mode.

use crate::sinks::{Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use crate::state::{State, StateError};
use async_trait::async_trait;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The state key recording that `sink` is in adopting mode (its value: when it was set).
fn key(sink: &str) -> String {
    format!("reconcile.adopting.{sink}")
}

/// True when `reconcile --adopt` put `sink` in adopting mode and no `--apply` ended it.
pub fn is_adopting(state: &State, sink: &str) -> Result<bool, StateError> {
    Ok(state.kv_get(&key(sink))?.is_some())
}

/// Puts `sink` in adopting mode.
pub(super) fn start(state: &State, sink: &str) -> Result<(), StateError> {
    state.kv_set(&key(sink), &chrono::Utc::now().to_rfc3339())
}

/// Ends the adopting mode of `sink`; true when it was on.
pub(super) fn end(state: &State, sink: &str) -> Result<bool, StateError> {
    state.kv_remove(&key(sink))
}

/// `sink` as the pipeline should use it: wrapped in [`Adopting`] while the state says so.
pub fn wrap(sink: Arc<dyn Sink>, state: &State) -> Result<Arc<dyn Sink>, StateError> {
    if !is_adopting(state, sink.name())? {
        return Ok(sink);
    }
    tracing::info!(
        sink = sink.name(),
        "adopting mode (reconcile --adopt): each create first looks for a live indicator of \
         ours holding the value and takes it over instead of creating a second one"
    );
    Ok(Arc::new(Adopting { inner: sink }))
}

/// A sink whose creates adopt what it already holds of ours.
pub struct Adopting {
    inner: Arc<dyn Sink>,
}

#[async_trait]
impl Sink for Adopting {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn supports_update(&self) -> bool {
        self.inner.supports_update()
    }

    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        let creates: Vec<Change> = batch
            .iter()
            .filter(|c| c.op == ChangeOp::Create)
            .cloned()
            .collect();
        if creates.is_empty() {
            return self.inner.apply(batch).await;
        }
        let found = match self.inner.resolve(&creates).await {
            Ok(found) if found.len() == creates.len() => found,
            Ok(found) => {
                tracing::warn!(sink = self.name(), asked = creates.len(), answered = found.len(),
                    "the lookup before adopting answered for another number of creates; sending them");
                vec![Resolution::NotApplied; creates.len()]
            }
            Err(e) => {
                // Nothing could be looked up: not one create may go out blind in this mode.
                let cause = format!("the lookup before an adopting create failed: {e}");
                return batch
                    .iter()
                    .map(|_| Outcome::Retry {
                        after: None,
                        error: SinkError::NotSent {
                            sink: self.inner.name(),
                            cause: cause.clone(),
                        },
                    })
                    .collect();
            }
        };
        let mut found = found.into_iter();
        let mut decided: Vec<Option<Outcome>> = Vec::with_capacity(batch.len());
        let mut send: Vec<Change> = Vec::new();
        for c in batch {
            let resolution = if c.op == ChangeOp::Create {
                found.next()
            } else {
                None
            };
            match resolution {
                Some(Resolution::Applied { remote_id }) => {
                    tracing::info!(sink = self.name(), kind = c.ioc.kind.as_str(), value = %c.ioc.value,
                        remote_id = remote_id.as_deref().unwrap_or("-"), "adopted instead of created");
                    decided.push(Some(Outcome::Applied { remote_id }));
                }
                Some(Resolution::Unknown) => decided.push(Some(Outcome::Retry {
                    after: None,
                    error: SinkError::NotSent {
                        sink: self.inner.name(),
                        cause: "the lookup before an adopting create could not tell".into(),
                    },
                })),
                Some(Resolution::NotApplied) | None => {
                    decided.push(None);
                    send.push(c.clone());
                }
            }
        }
        let mut sent = if send.is_empty() {
            Vec::new()
        } else {
            self.inner.apply(&send).await
        }
        .into_iter();
        decided
            .into_iter()
            .map(|d| {
                d.or_else(|| sent.next()).unwrap_or_else(|| Outcome::Retry {
                    after: None,
                    error: SinkError::NotSent {
                        sink: self.inner.name(),
                        cause: "the sink answered for fewer changes than it was sent".into(),
                    },
                })
            })
            .collect()
    }

    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        self.inner.resolve(pending).await
    }

    async fn check(&self) -> Result<String, SinkError> {
        self.inner.check().await
    }

    fn seed_live_count(&self, live: u64) {
        self.inner.seed_live_count(live);
    }

    fn spawn_upkeep(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Arc::clone(&self.inner).spawn_upkeep(shutdown)
    }
}
