//! `iocsync run --state-only`: stands in for each configured sink while a source is replayed
//! after `reconcile --adopt`, so the replay rebuilds the state (indicators, holders, the sinks'
//! part as the pipeline would leave it) without one call to a sink. `reconcile --apply` then sends
//! each sink only what differs from what it holds — the values it misses, the extra ones and the
//! stale ones — instead of the replay's whole history (values the stream created and deleted again
//! are never sent).

use super::{Change, Outcome, Resolution, Sink, SinkError};
use async_trait::async_trait;

/// Takes a sink's place: same name, batch size and update support, every change recorded as
/// applied (keeping the remote id the state already has), nothing sent.
#[derive(Debug, Clone)]
pub struct StateOnly {
    name: &'static str,
    max_batch: usize,
    updates: bool,
}

impl StateOnly {
    /// The stand-in for `sink`.
    pub fn standing_in_for(sink: &dyn Sink) -> Self {
        StateOnly {
            name: sink.name(),
            max_batch: sink.max_batch(),
            updates: sink.supports_update(),
        }
    }
}

#[async_trait]
impl Sink for StateOnly {
    fn name(&self) -> &'static str {
        self.name
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn supports_update(&self) -> bool {
        self.updates
    }

    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        batch
            .iter()
            .map(|c| Outcome::Applied {
                remote_id: c.remote_id.clone(),
            })
            .collect()
    }

    /// Never asked: a state-only run refuses to start with changes left pending.
    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        Ok(pending.iter().map(|_| Resolution::Unknown).collect())
    }

    async fn check(&self) -> Result<String, SinkError> {
        Ok("state-only run: not called".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioc::{Ioc, IocKind};
    use crate::model::{ChangeOp, IocMeta};

    #[tokio::test]
    async fn every_change_is_recorded_as_applied_with_the_id_the_state_has() {
        let stand_in = StateOnly {
            name: "sentinelone",
            max_batch: 1000,
            updates: true,
        };
        let change = |op, remote_id: Option<&str>| Change {
            intent_id: 1,
            op,
            ioc: Ioc {
                kind: IocKind::Domain,
                value: "a.example".into(),
            },
            indicator_id: "indicator--1".into(),
            remote_id: remote_id.map(String::from),
            meta: IocMeta::default(),
        };
        let out = stand_in
            .apply(&[
                change(ChangeOp::Create, None),
                change(ChangeOp::Delete, Some("s1-1")),
            ])
            .await;
        assert!(matches!(&out[0], Outcome::Applied { remote_id: None }));
        assert!(matches!(&out[1], Outcome::Applied { remote_id: Some(id) } if id == "s1-1"));
        assert_eq!(stand_in.name(), "sentinelone");
    }
}
