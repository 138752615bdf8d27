//! Posting items in batches to a remote that refuses a whole batch for the sake of some of its
//! items (SentinelOne and Sekoia both answer 400 for the batch). The refused batch is taken apart:
//! the items the remote names are rejected and the rest are posted again; when it names none, the
//! batch is halved until single items remain, so one bad item never holds back its neighbours. A
//! 413 halves the batch too. Any other failure stops every remaining post: the remote is down,
//! limiting or refusing us, and the whole rest is retried later.

use super::{op_runs, Change, ChangeOp, Outcome, Resolution, Sink, SinkError};
use crate::remote::RemoteFailure;
use async_trait::async_trait;
use std::future::Future;

/// What a batched sink tells the pipeline about itself.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// [`Sink::name`].
    pub sink: &'static str,
    /// [`Sink::max_batch`]: the most changes one call carries, at least 1.
    pub max: usize,
    /// [`Sink::supports_update`].
    pub updates: bool,
}

/// A sink that posts to a remote one call per run of same-kind changes (see [`op_runs`]):
/// SentinelOne and Sekoia. Each is a [`Sink`] through the impl below, which applies a batch run by
/// run; the sink itself says only what differs between remotes.
#[async_trait]
pub trait BatchedSink: Send + Sync {
    /// What one run learns for the next (the remote ids of IOCs just created, so that a delete
    /// right after its create in the same batch finds them).
    type Known: Default + Send + Sync;

    /// Name, batch size and whether updates are sent.
    fn batching(&self) -> Batching;

    /// Applies a run of deletes.
    async fn delete_run(&self, run: &[Change], known: &Self::Known) -> Vec<Outcome>;

    /// Applies a run of creates and updates.
    async fn write_run(&self, run: &[Change], known: &mut Self::Known) -> Vec<Outcome>;

    /// [`Sink::resolve`].
    async fn resolve_pending(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError>;

    /// [`Sink::check`].
    async fn probe(&self) -> Result<String, SinkError>;

    /// [`Sink::seed_live_count`].
    fn seed_live(&self, _live: u64) {}
}

#[async_trait]
impl<T: BatchedSink> Sink for T {
    fn name(&self) -> &'static str {
        self.batching().sink
    }

    fn max_batch(&self) -> usize {
        self.batching().max
    }

    fn supports_update(&self) -> bool {
        self.batching().updates
    }

    /// Applies `batch` in order, one run at a time, so a create followed by a delete of the same
    /// IOC (or the reverse) ends as the source intended.
    async fn apply(&self, batch: &[Change]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        let mut known = T::Known::default();
        for run in op_runs(batch) {
            if run[0].op == ChangeOp::Delete {
                out.extend(self.delete_run(run, &known).await);
            } else {
                out.extend(self.write_run(run, &mut known).await);
            }
        }
        out
    }

    async fn resolve(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        self.resolve_pending(pending).await
    }

    async fn check(&self) -> Result<String, SinkError> {
        self.probe().await
    }

    fn seed_live_count(&self, live: u64) {
        self.seed_live(live);
    }
}

/// Adds the answer of one pending change's lookup to `out`. A refused credential ends the whole
/// resolution (`Err`); any other failure leaves this change unknown, to be asked again later.
pub fn push_lookup<E: RemoteFailure + std::fmt::Display>(
    change: &Change,
    answer: Result<Resolution, E>,
    out: &mut Vec<Resolution>,
) -> Result<(), E> {
    match answer {
        Ok(r) => out.push(r),
        Err(e) if e.to_sink_error().is_auth() => return Err(e),
        Err(e) => {
            tracing::debug!(value = %change.ioc.value, error = %e, "lookup failed; asking again later");
            out.push(Resolution::Unknown);
        }
    }
    Ok(())
}

/// What became of one item of a batch post.
#[derive(Debug, Clone)]
pub enum ItemResult<E> {
    /// Created; the remote's id when it is known.
    Created(Option<String>),
    /// Refused by the remote's validation, with its reason: dead-letter.
    Rejected(String),
    /// Not done: retry later.
    Failed(E),
}

/// How a remote answered the post of one group of items.
pub enum GroupAnswer<E> {
    /// Accepted: the remote id (when known) of each item of the group, in the group's order.
    Created(Vec<Option<String>>),
    /// Refused for its content.
    Refused {
        /// The items the remote named (indexes into the items), each with its reason.
        named: Vec<(usize, String)>,
        /// The reason given to a group of one the remote refused without naming it.
        whole: String,
    },
    /// 413: too large; split unless it is a single item, which then fails with the error.
    TooLarge(E),
    /// Any other failure.
    Failed(E),
}

/// Posts `groups` (lists of item indexes, posted in order) with `post`, filling `results` at each
/// index. `post` is given a group and answers for it.
pub async fn post_in_groups<E, F, Fut>(
    groups: Vec<Vec<usize>>,
    results: &mut [Option<ItemResult<E>>],
    mut post: F,
) where
    E: Clone,
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = GroupAnswer<E>>,
{
    let mut work: Vec<Vec<usize>> = groups.into_iter().rev().collect();
    while let Some(group) = work.pop() {
        if group.is_empty() {
            continue;
        }
        match post(group.clone()).await {
            GroupAnswer::Created(ids) => {
                for (&i, id) in group.iter().zip(ids) {
                    results[i] = Some(ItemResult::Created(id));
                }
            }
            GroupAnswer::Refused { named, whole } => {
                let mut rest = Vec::new();
                for &i in &group {
                    match named.iter().find(|(n, _)| *n == i) {
                        Some((_, why)) => results[i] = Some(ItemResult::Rejected(why.clone())),
                        None => rest.push(i),
                    }
                }
                if rest.len() < group.len() {
                    work.push(rest);
                } else if group.len() == 1 {
                    results[group[0]] = Some(ItemResult::Rejected(whole));
                } else {
                    split(&group, &mut work);
                }
            }
            GroupAnswer::TooLarge(_) if group.len() > 1 => split(&group, &mut work),
            GroupAnswer::TooLarge(e) | GroupAnswer::Failed(e) => {
                for i in group.into_iter().chain(work.drain(..).flatten()) {
                    results[i] = Some(ItemResult::Failed(e.clone()));
                }
            }
        }
    }
}

/// Queues the two halves of `group`, first half first.
fn split(group: &[usize], work: &mut Vec<Vec<usize>>) {
    let (a, b) = group.split_at(group.len() / 2);
    work.push(b.to_vec());
    work.push(a.to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote that refuses any batch holding item 3 (naming it only when `names` is set) and
    /// any batch of more than 4 items as too large.
    async fn run(names: bool) -> (Vec<Option<ItemResult<String>>>, Vec<Vec<usize>>) {
        let mut results: Vec<Option<ItemResult<String>>> = (0..10).map(|_| None).collect();
        let mut posts = Vec::new();
        post_in_groups(
            vec![(0..6).collect(), (6..10).collect()],
            &mut results,
            |g| {
                posts.push(g.clone());
                async move {
                    if g.len() > 4 {
                        GroupAnswer::TooLarge("413".to_string())
                    } else if g.contains(&3) {
                        GroupAnswer::Refused {
                            named: if names {
                                vec![(3, "bad 3".into())]
                            } else {
                                vec![]
                            },
                            whole: "refused".into(),
                        }
                    } else {
                        GroupAnswer::Created(g.iter().map(|i| Some(format!("id{i}"))).collect())
                    }
                }
            },
        )
        .await;
        (results, posts)
    }

    #[tokio::test]
    async fn a_named_item_is_rejected_and_its_neighbours_reposted() {
        let (results, posts) = run(true).await;
        for (i, r) in results.iter().enumerate() {
            match r {
                Some(ItemResult::Rejected(why)) => assert_eq!((i, why.as_str()), (3, "bad 3")),
                Some(ItemResult::Created(Some(id))) => assert_eq!(id, &format!("id{i}")),
                other => panic!("item {i}: {other:?}"),
            }
        }
        assert_eq!(posts[0].len(), 6, "the first post is the whole group");
    }

    #[tokio::test]
    async fn an_unnamed_refusal_is_bisected_down_to_the_single_item() {
        let (results, _) = run(false).await;
        assert!(matches!(&results[3], Some(ItemResult::Rejected(w)) if w == "refused"));
        let created = results
            .iter()
            .filter(|r| matches!(r, Some(ItemResult::Created(_))))
            .count();
        assert_eq!(created, 9);
    }

    #[tokio::test]
    async fn another_failure_fails_everything_left() {
        let mut results: Vec<Option<ItemResult<String>>> = (0..4).map(|_| None).collect();
        post_in_groups(vec![vec![0, 1], vec![2, 3]], &mut results, |g| async move {
            if g[0] == 0 {
                GroupAnswer::Created(vec![None, None])
            } else {
                GroupAnswer::Failed("503".to_string())
            }
        })
        .await;
        assert!(matches!(results[1], Some(ItemResult::Created(None))));
        assert!(matches!(&results[2], Some(ItemResult::Failed(e)) if e == "503"));
        assert!(matches!(&results[3], Some(ItemResult::Failed(e)) if e == "503"));
    }
}
