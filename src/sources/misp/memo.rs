//! What a MISP run leaves in the state for the next: the per-feed counts `misp feeds` shows and the
//! boundary memo that deduplicates the next run's overlap (after a restart and with `--once` too).

use super::feeds::{FeedCounts, FEED_COUNTS_KEY};
use crate::sources::SourceStore;
use tracing::warn;

use super::source::{Memo, Memory, MispSource, MEMO_KEY};

impl MispSource {
    /// Stores the per-feed counts and the boundary memo; a failure costs only those notes.
    pub(super) async fn save_run_notes(
        &self,
        store: &SourceStore,
        counts: &FeedCounts,
        memo: &Memo,
    ) {
        let notes = serde_json::to_string(counts).and_then(|c| {
            Ok(vec![
                (FEED_COUNTS_KEY, c),
                (MEMO_KEY, serde_json::to_string(memo)?),
            ])
        });
        let result = match notes {
            Ok(notes) => store.set(notes).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot serialise them: {e}")),
        };
        if let Err(e) = result {
            // Only the feed counts of `misp feeds` and the next run's deduplication memo are
            // lost: the next run re-reads its overlap and the pipeline deduplicates by state.
            warn!(error = %e, "cannot store the run's feed counts and memo");
        }
    }

    /// Reads the memo of the last run from the state (restarts and `--once` keep deduplicating).
    pub(super) async fn load_memo(&self, store: &SourceStore, mem: &mut Memory) {
        match store.get(MEMO_KEY).await {
            Ok(Some(text)) => match serde_json::from_str::<Memo>(&text) {
                Ok(memo) => mem.memo = memo,
                Err(e) => {
                    warn!(error = %e, "the last run's memo is unreadable; starting without it")
                }
            },
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot read the last run's memo; starting without it"),
        }
    }
}
