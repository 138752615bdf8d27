//! How the MISP source takes up what the web console set ([`super::overrides`]): the schedule
//! before each wait, the feed toggles and a `last_run_time` at each run start; and the wait
//! itself, which a console edit or a run request cuts short.

use super::overrides::{Applied, LastRunOverride, Overrides, LAST_RUN_KEY};
use super::schedule::Schedule;
use super::source::{Memo, Memory, MispSource};
use crate::sources::SourceContext;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// How a wait for the next run ended.
pub(super) enum Wake {
    /// The run is due (or the operator asked for it now).
    Due,
    /// The console changed a setting: recompute the next run.
    SettingsChanged,
    /// Shutdown.
    Shutdown,
}

impl MispSource {
    /// The console's settings; unreadable ones are logged and the config applies (a run never
    /// stops for them).
    async fn overrides(&self, ctx: &SourceContext) -> Overrides {
        match Overrides::load(&ctx.store).await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot read the console's MISP settings from the state: the config applies for this run");
                Overrides::default()
            }
        }
    }

    /// The schedule in force: the console's when it set a valid one, else the config's.
    /// The console's edits to report in `check` (and the console's Status page): `iocsync check`
    /// runs without the pipeline, so they are read from the state when the source is built.
    pub fn with_console_overrides(mut self, overrides: Overrides) -> Self {
        self.console = overrides;
        self
    }

    /// The schedule `check` reports, and `" (set in the console)"` when it is the console's.
    pub(super) fn checked_schedule(&self) -> (Schedule, &'static str) {
        match self
            .console
            .schedule
            .as_ref()
            .map(|o| o.schedule.schedule(&self.cfg))
        {
            Some(Ok(s)) => (s, " (set in the console)"),
            _ => (self.schedule, ""),
        }
    }

    pub(super) async fn current_schedule(&self, ctx: &SourceContext) -> Schedule {
        match self.overrides(ctx).await.schedule {
            None => self.schedule,
            Some(o) => match o.schedule.schedule(&self.cfg) {
                Ok(s) => s,
                Err((key, message)) => {
                    // The console validated it when saved: only a changed config can get here.
                    warn!(key, %message, "the console's MISP schedule is not valid with this config: the config's applies");
                    self.schedule
                }
            },
        }
    }

    /// At a run's start: takes up a console `last_run_time` (moving `mem`'s mark) and returns the
    /// feed toggles (feed id → pushed).
    pub(super) async fn take_overrides(
        &self,
        ctx: &SourceContext,
        mem: &mut Memory,
    ) -> BTreeMap<String, bool> {
        let o = self.overrides(ctx).await;
        let toggles = o.pushed_by_id();
        if let Some(lr) = o.last_run.filter(|lr| lr.due(mem.mark.as_ref())) {
            self.take_last_run(ctx, mem, lr).await;
        }
        toggles
    }

    async fn take_last_run(&self, ctx: &SourceContext, mem: &mut Memory, lr: LastRunOverride) {
        let over = mem.mark.map(|m| m.encode());
        let mark = lr.mark_over(mem.mark.as_ref(), Utc::now().timestamp());
        info!(
            old = %over.as_deref().unwrap_or("none"),
            new = %mark.encode(),
            set_by = %lr.set.by,
            set_at = %lr.set.at,
            "MISP last_run_time set in the console: this run reads from it"
        );
        mem.mark = Some(mark);
        // The memo deduplicates against the replaced position's run only.
        mem.memo = Memo::default();
        let taken = LastRunOverride {
            applied: Some(Applied {
                over,
                at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
            ..lr
        };
        let stored = match serde_json::to_string(&taken) {
            Ok(text) => ctx
                .store
                .set(vec![(LAST_RUN_KEY, text)])
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            // Then the next run takes it up again: it re-reads the same window, which the
            // pipeline deduplicates by state.
            warn!(error = %e, "cannot record that the console's last_run_time was taken up");
        }
    }
}

/// Sleeps until `at` (wall clock, re-read every minute so a clock change or a suspend is noticed),
/// until the operator asks for a run now, or until the console changes a setting.
pub(super) async fn wait_until(at: DateTime<Utc>, ctx: &SourceContext) -> Wake {
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Wake::Due;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Wake::Shutdown,
            _ = ctx.control.run_requested() => {
                info!("MISP run started now at the operator's request");
                return Wake::Due;
            }
            _ = ctx.control.settings_change() => return Wake::SettingsChanged,
            _ = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
        }
    }
}
