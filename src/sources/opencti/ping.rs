//! The ping task: publishes the committed position to OpenCTI as the connector's state every
//! `ping_interval`, and notices when an operator reset the connector's state in the platform.

use super::graphql::{ConnectorState, GraphqlClient, RecoverUntil, Registration};
use super::source::Settings;
use super::OpenCtiError;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What the ping task and the stream loop share.
pub(super) struct PingShared {
    /// The start of the current replay (what we report until the pipeline commits something).
    pub(super) base_start: String,
    pub(super) recover_until: RecoverUntil,
    /// After a reset the pipeline's committed value is stale until it changes: ignore it.
    pub(super) ignore_committed: Option<Option<String>>,
    /// The platform's state as last seen was empty: a further empty answer is not a new reset.
    pub(super) platform_empty: bool,
}

impl PingShared {
    pub(super) fn state(&mut self, committed: Option<String>) -> ConnectorState {
        if let Some(stale) = &self.ignore_committed {
            if *stale == committed {
                return self.own_state(None);
            }
            self.ignore_committed = None;
        }
        self.own_state(committed)
    }

    pub(super) fn own_state(&self, committed: Option<String>) -> ConnectorState {
        ConnectorState {
            start_from: Some(committed.unwrap_or_else(|| self.base_start.clone())),
            recover_until: self.recover_until.clone(),
        }
    }

    pub(super) fn restart(&mut self, fresh: (String, RecoverUntil), committed: Option<String>) {
        self.base_start = fresh.0;
        self.recover_until = fresh.1;
        self.ignore_committed = Some(committed);
    }
}

pub(super) fn lock(m: &Mutex<PingShared>) -> std::sync::MutexGuard<'_, PingShared> {
    // A panic elsewhere while holding it leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One ping; true when it revealed a remote reset (then `shared` already holds the fresh start).
pub(super) async fn ping_once(
    gql: &GraphqlClient,
    s: &Settings,
    committed: &watch::Receiver<Option<String>>,
    shared: &Mutex<PingShared>,
) -> Result<bool, OpenCtiError> {
    let current = committed.borrow().clone();
    let state = lock(shared).state(current.clone());
    let returned = gql.ping(&s.connector_id, &state.to_json()).await?;
    let remote = ConnectorState::parse(returned.as_deref());
    let mut sh = lock(shared);
    let was_empty = std::mem::replace(&mut sh.platform_empty, remote.is_none());
    if remote.is_none() && !was_empty {
        sh.restart(s.fresh_start(), current);
        return Ok(true);
    }
    if let Some(remote) = remote.filter(|r| *r != state) {
        debug!(sent = %state.to_json(), stored = %remote.to_json(), "platform holds another state");
    }
    Ok(false)
}

/// Pings now and every `ping_interval` until cancelled.
pub(super) async fn ping_task(
    gql: GraphqlClient,
    s: Arc<Settings>,
    committed: watch::Receiver<Option<String>>,
    shared: Arc<Mutex<PingShared>>,
    reset: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        match ping_once(&gql, &s, &committed, &shared).await {
            Ok(true) => reset.notify_one(),
            Ok(false) => {
                if failing {
                    info!("OpenCTI ping back to normal");
                }
                failing = false;
            }
            Err(OpenCtiError::Graphql { message, .. })
                if message.contains("No connector found") =>
            {
                // Deleted in the UI while we run: register again (its state is gone, which is
                // not a reset of ours: the next ping stores our position again).
                warn!("the connector was deleted in OpenCTI: registering it again");
                let reg = Registration {
                    id: s.connector_id.clone(),
                    name: s.name.clone(),
                    scope: s.scope.clone(),
                };
                match gql.register(&reg).await {
                    Ok(_) => lock(&shared).platform_empty = true,
                    Err(e) => warn!(cause = %e, "re-registering the connector failed"),
                }
            }
            Err(e) => {
                failing = true;
                warn!(cause = %e, "OpenCTI ping failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(s.ping_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_state_ignores_a_stale_commit_after_reset() {
        let mut sh = PingShared {
            base_start: "7-0".into(),
            recover_until: RecoverUntil::Off,
            ignore_committed: None,
            platform_empty: false,
        };
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("9-9")
        );
        assert_eq!(sh.state(None).start_from.as_deref(), Some("7-0"));
        sh.restart(("0-0".into(), RecoverUntil::Off), Some("9-9".into()));
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("0-0")
        );
        assert_eq!(
            sh.state(Some("1-0".into())).start_from.as_deref(),
            Some("1-0")
        );
        assert_eq!(
            sh.state(Some("9-9".into())).start_from.as_deref(),
            Some("9-9")
        );
    }
}
