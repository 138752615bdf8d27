//! The SentinelOne `Sink`: applies batches of changes through the client — creates and updates as
//! batched POSTs with whole-batch-400 recovery, deletes by uuid (looked up by externalId when
//! unknown) — and settles crash leftovers by looking IOCs up again.

use super::client::SentinelOneClient;
use super::config::SentinelOneConfig;
use super::detail::{offenders, Offender};
use super::error::{ApiError, S1Error, SINK};
use super::item::{build_item, ItemDefaults};
use super::types::{CreatedIoc, IocItem, ListQuery, RemoteIoc, S1Type};
use crate::config::Valid;
use crate::remote::RemoteFailure;
use crate::sinks::batch::{self, post_in_groups, push_lookup, BatchedSink, Batching, GroupAnswer};
use crate::sinks::{Change, ChangeOp, Outcome, Resolution, SinkError};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};

/// Uuids per existence check in `resolve`.
const RESOLVE_CHUNK: usize = 100;

/// The SentinelOne sink.
#[derive(Debug)]
pub struct SentinelOneSink {
    client: SentinelOneClient,
    defaults: ItemDefaults,
    batching: Batching,
}

/// What became of one item of a create post.
type ItemResult = batch::ItemResult<S1Error>;

/// Identity of an IOC within a batch: type, lower-cased value, indicator id.
type Key = (S1Type, String, String);

fn key_of(change: &Change) -> Key {
    (
        S1Type::from_kind(change.ioc.kind),
        change.ioc.value.trim().to_lowercase(),
        change.indicator_id.clone(),
    )
}

fn retry(e: &S1Error) -> Outcome {
    Outcome::Retry {
        after: e.retry_after(),
        error: e.to_sink_error(),
    }
}

/// `HTTP 400 4000010 Validation Error`, the S1 part of a rejection reason.
fn rejection_head(status: u16, errors: &[ApiError]) -> String {
    let mut head = format!("SentinelOne rejected the IOC (HTTP {status}");
    if let Some(e) = errors.first() {
        if let Some(code) = e.code {
            head.push_str(&format!(" {code}"));
        }
        if let Some(title) = &e.title {
            head.push_str(&format!(" {title}"));
        }
    }
    head.push(')');
    head
}

fn is_offender(item: &IocItem, o: &Offender) -> bool {
    // Case-insensitive: S1 may echo a normalised value; a false match only rejects an item that
    // differs from an invalid one by case.
    o.value.trim().eq_ignore_ascii_case(item.value.trim())
        && o.kind
            .as_deref()
            .is_none_or(|k| k.eq_ignore_ascii_case(item.kind.as_str()))
}

/// Matches S1's create response to the items sent: same index when it matches (the normal case),
/// else any unused entry with the same type, value and externalId. Order is not documented.
fn match_created(sent: &[&IocItem], got: &[CreatedIoc]) -> Vec<Option<String>> {
    let mut used = vec![false; got.len()];
    sent.iter()
        .enumerate()
        .map(|(i, item)| {
            let fits =
                |r: &CreatedIoc| r.matches(item.kind, &item.value, item.external_id.as_deref());
            let pick = got
                .get(i)
                .filter(|r| !used[i] && fits(r))
                .map(|_| i)
                .or_else(|| (0..got.len()).find(|&j| !used[j] && fits(&got[j])))?;
            used[pick] = true;
            got[pick].uuid.clone()
        })
        .collect()
}

/// The newest entry (by `updatedAt`, then `creationTime`; ISO strings sort chronologically).
fn newest(found: &[RemoteIoc]) -> Option<&RemoteIoc> {
    found.iter().filter(|r| r.uuid.is_some()).max_by(|a, b| {
        (a.updated_at.as_deref(), a.creation_time.as_deref())
            .cmp(&(b.updated_at.as_deref(), b.creation_time.as_deref()))
    })
}

impl SentinelOneSink {
    /// Builds the sink from a validated section; `default_source_name` ("OpenCTI", "MISP") is used
    /// when `source_name` is unset. Fails only on the client's TLS setup.
    pub fn new(
        cfg: &Valid<SentinelOneConfig>,
        default_source_name: &str,
    ) -> Result<Self, SinkError> {
        let source = cfg
            .source_name
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| default_source_name.to_string());
        Ok(SentinelOneSink {
            client: SentinelOneClient::new(cfg)?,
            defaults: ItemDefaults {
                source,
                score: cfg.default_score,
                valid_days: cfg.default_valid_days,
            },
            batching: Batching {
                sink: SINK,
                max: cfg.batch_size.max(1),
                updates: true,
            },
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &SentinelOneClient {
        &self.client
    }

    /// POSTs the items at `idx` in batches; a whole-batch 400 is taken apart: items S1 names are
    /// rejected and the rest re-posted; when S1 names none we bisect until single items remain.
    /// A non-validation failure stops all remaining posts (S1 is down, limiting or refusing us).
    async fn post_all(&self, items: &[IocItem], results: &mut [Option<ItemResult>]) {
        let groups: Vec<Vec<usize>> = (0..items.len())
            .collect::<Vec<_>>()
            .chunks(self.batching.max)
            .map(<[usize]>::to_vec)
            .collect();
        post_in_groups(groups, results, |group| async move {
            let batch: Vec<&IocItem> = group.iter().map(|&i| &items[i]).collect();
            match self.client.create_lean(&batch).await {
                Ok(got) => GroupAnswer::Created(match_created(&batch, &got)),
                Err(S1Error::Validation { status, errors, .. }) => {
                    let offending: Vec<Offender> = errors
                        .iter()
                        .filter_map(|e| e.detail.as_deref())
                        .filter_map(offenders)
                        .flatten()
                        .collect();
                    let head = rejection_head(status, &errors);
                    let mut named = Vec::new();
                    for &i in &group {
                        if let Some(o) = offending.iter().find(|o| is_offender(&items[i], o)) {
                            tracing::warn!(
                                value = %items[i].value,
                                indicator = items[i].external_id.as_deref().unwrap_or(""),
                                "sentinelone rejected an IOC"
                            );
                            named.push((i, format!("{head}: {}", o.entry)));
                        }
                    }
                    let why = super::error::describe_errors(&errors, "");
                    GroupAnswer::Refused {
                        named,
                        whole: format!("{head}: {why}"),
                    }
                }
                // 413: the batch is too big for S1; halving it is the cure.
                Err(e @ S1Error::Http { status: 413, .. }) => GroupAnswer::TooLarge(e),
                Err(e) => GroupAnswer::Failed(e),
            }
        })
        .await;
    }

    /// Crash leftover of an update: if S1 holds an entry other than the old uuid, the POST happened;
    /// keep the newest entry, remove the rest (the old uuid included) and report it applied.
    async fn resolve_update(&self, c: &Change) -> Result<Resolution, S1Error> {
        let kind = S1Type::from_kind(c.ioc.kind);
        let found = self
            .client
            .find(kind, c.ioc.value.trim(), Some(&c.indicator_id))
            .await?;
        let others = found
            .iter()
            .any(|r| r.uuid.is_some() && r.uuid != c.remote_id);
        if !others {
            // Re-applying an update is harmless.
            return Ok(Resolution::NotApplied);
        }
        let keep = newest(&found).and_then(|r| r.uuid.clone());
        let stale: Vec<String> = found
            .iter()
            .filter_map(|r| r.uuid.clone())
            .filter(|u| Some(u) != keep.as_ref())
            .collect();
        if !stale.is_empty() {
            self.client.delete_uuids(&stale).await?;
        }
        Ok(Resolution::Applied { remote_id: keep })
    }

    /// Resolves each change; a lookup that fails transiently answers `Unknown` for that change only,
    /// a refused credential fails the whole call.
    async fn resolve_all(&self, pending: &[Change]) -> Result<Vec<Resolution>, S1Error> {
        // Deletes with a known uuid: one existence check per chunk of uuids.
        let uuids: Vec<String> = pending
            .iter()
            .filter(|c| c.op == ChangeOp::Delete)
            .filter_map(|c| c.remote_id.clone())
            .collect();
        let mut existing: Option<HashSet<String>> = Some(HashSet::new());
        for chunk in uuids.chunks(RESOLVE_CHUNK) {
            let q = ListQuery {
                uuids: chunk.to_vec(),
                ..Default::default()
            };
            match self.client.list_all(&q, None).await {
                Ok(page) => {
                    if let Some(set) = existing.as_mut() {
                        set.extend(page.items.into_iter().filter_map(|r| r.uuid));
                    }
                }
                Err(e) if e.to_sink_error().is_auth() => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "uuid lookup failed; asking again later");
                    existing = None;
                }
            }
        }

        let mut out = Vec::with_capacity(pending.len());
        for c in pending {
            let resolution = match (c.op, &c.remote_id) {
                (ChangeOp::Delete, Some(uuid)) => match &existing {
                    Some(set) if set.contains(uuid) => Ok(Resolution::NotApplied),
                    Some(_) => Ok(Resolution::Applied { remote_id: None }),
                    None => Ok(Resolution::Unknown),
                },
                (ChangeOp::Delete, None) => self.resolve_delete_by_lookup(c).await,
                (ChangeOp::Create, _) => self.resolve_create(c).await,
                (ChangeOp::Update, _) => self.resolve_update(c).await,
            };
            push_lookup(c, resolution, &mut out)?;
        }
        Ok(out)
    }

    async fn resolve_delete_by_lookup(&self, c: &Change) -> Result<Resolution, S1Error> {
        let kind = S1Type::from_kind(c.ioc.kind);
        let found = self
            .client
            .find(kind, c.ioc.value.trim(), Some(&c.indicator_id))
            .await?;
        Ok(if found.is_empty() {
            Resolution::Applied { remote_id: None }
        } else {
            Resolution::NotApplied
        })
    }

    async fn resolve_create(&self, c: &Change) -> Result<Resolution, S1Error> {
        let kind = S1Type::from_kind(c.ioc.kind);
        let found = self
            .client
            .find(kind, c.ioc.value.trim(), Some(&c.indicator_id))
            .await?;
        Ok(match newest(&found) {
            Some(r) => Resolution::Applied {
                remote_id: r.uuid.clone(),
            },
            None => Resolution::NotApplied,
        })
    }
}

#[async_trait]
impl BatchedSink for SentinelOneSink {
    type Known = HashMap<Key, String>;

    fn batching(&self) -> Batching {
        self.batching
    }

    /// Creates and updates (a run of consecutive non-delete changes).
    async fn write_run(&self, changes: &[Change], known: &mut Self::Known) -> Vec<Outcome> {
        let now = chrono::Utc::now();
        let items: Vec<IocItem> = changes
            .iter()
            .map(|c| build_item(c, &self.defaults, now))
            .collect();
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        self.post_all(&items, &mut results).await;

        // Updates: if S1 did not upsert (a new uuid came back), the old entry must go.
        let stale: Vec<String> = changes
            .iter()
            .zip(&results)
            .filter(|(c, _)| c.op == ChangeOp::Update)
            .filter_map(|(c, r)| match (r, &c.remote_id) {
                (Some(ItemResult::Created(Some(new))), Some(old)) if new != old => {
                    Some(old.clone())
                }
                _ => None,
            })
            .collect();
        let stale_result = if stale.is_empty() {
            Ok(0)
        } else {
            self.client.delete_uuids(&stale).await
        };

        changes
            .iter()
            .zip(results)
            .map(|(c, r)| match r {
                Some(ItemResult::Created(uuid)) => {
                    let replaced = c.op == ChangeOp::Update
                        && c.remote_id.as_ref().is_some_and(|old| stale.contains(old));
                    if let (true, Err(e)) = (replaced, &stale_result) {
                        // The new entry exists but the old one is still there: half applied. The
                        // error is reported as ambiguous whatever its status, so the pipeline asks
                        // `resolve` (which keeps the newest entry and removes the rest) instead of
                        // posting a third copy.
                        return Outcome::Retry {
                            after: e.retry_after(),
                            error: SinkError::Transport {
                                sink: SINK,
                                endpoint: self.client.endpoint_url().to_string(),
                                message: format!("update half applied (new entry created, old one not yet removed): {}", e.to_sink_error()),
                            },
                        };
                    }
                    if let Some(uuid) = &uuid {
                        known.insert(key_of(c), uuid.clone());
                    }
                    Outcome::Applied { remote_id: uuid }
                }
                Some(ItemResult::Rejected(reason)) => Outcome::Rejected { reason },
                Some(ItemResult::Failed(e)) => retry(&e),
                None => Outcome::Retry {
                    after: None,
                    error: SinkError::Transport {
                        sink: SINK,
                        endpoint: self.client.endpoint_url().to_string(),
                        message: "the item was not sent".into(),
                    },
                },
            })
            .collect()
    }

    /// Deletes (a run of consecutive delete changes).
    async fn delete_run(&self, changes: &[Change], known: &Self::Known) -> Vec<Outcome> {
        // Per change: the uuids to delete, or the error that stopped us finding them.
        let mut targets: Vec<Result<Vec<String>, S1Error>> = Vec::with_capacity(changes.len());
        let mut abort: Option<S1Error> = None;
        for c in changes {
            if let Some(uuid) = c
                .remote_id
                .clone()
                .or_else(|| known.get(&key_of(c)).cloned())
            {
                targets.push(Ok(vec![uuid]));
                continue;
            }
            if let Some(e) = &abort {
                targets.push(Err(e.clone()));
                continue;
            }
            // No uuid known (created before iocsync, or lost): find ours by externalId + value.
            let kind = S1Type::from_kind(c.ioc.kind);
            match self
                .client
                .find(kind, c.ioc.value.trim(), Some(&c.indicator_id))
                .await
            {
                Ok(found) => targets.push(Ok(found.into_iter().filter_map(|r| r.uuid).collect())),
                Err(e) => {
                    abort = Some(e.clone());
                    targets.push(Err(e));
                }
            }
        }

        let mut all: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for uuid in targets.iter().flatten().flatten() {
            if seen.insert(uuid.clone()) {
                all.push(uuid.clone());
            }
        }
        let mut failed: HashMap<String, S1Error> = HashMap::new();
        for chunk in all.chunks(self.batching.max) {
            if let Some(e) = &abort {
                failed.extend(chunk.iter().map(|u| (u.clone(), e.clone())));
                continue;
            }
            if let Err(e) = self.client.delete_uuids(chunk).await {
                failed.extend(chunk.iter().map(|u| (u.clone(), e.clone())));
                abort = Some(e);
            }
        }

        targets
            .into_iter()
            .map(|t| match t {
                Err(e) => retry(&e),
                Ok(uuids) => match uuids.iter().find_map(|u| failed.get(u)) {
                    Some(e) => retry(e),
                    // Not found, or deleted (affected 0 is fine: already gone).
                    None => Outcome::Applied { remote_id: None },
                },
            })
            .collect()
    }

    async fn resolve_pending(&self, pending: &[Change]) -> Result<Vec<Resolution>, SinkError> {
        self.resolve_all(pending)
            .await
            .map_err(|e| e.to_sink_error())
    }

    async fn probe(&self) -> Result<String, SinkError> {
        let scope = self.client.scope().describe();
        match self.client.probe().await {
            Ok(page) => {
                let count = page
                    .total_items
                    .map(|n| format!(" ({n} IOCs)"))
                    .unwrap_or_default();
                Ok(format!(
                    "reachable at {}, token accepted, scope {scope} visible{count}; write \
                     permission is proven by the first create",
                    self.client.endpoint_url()
                ))
            }
            Err(S1Error::Validation { errors, body, .. }) => Err(SinkError::Config {
                sink: SINK,
                key: "sentinelone_intel.account_id",
                message: format!(
                    "SentinelOne refused the scope {scope}: {}",
                    super::error::describe_errors(&errors, &body)
                ),
            }),
            Err(S1Error::Permission {
                endpoint, message, ..
            }) => Err(SinkError::Permission {
                sink: SINK,
                endpoint,
                status: 403,
                message: format!("scope {scope}: {message}"),
            }),
            Err(e) => Err(e.to_sink_error()),
        }
    }
}
