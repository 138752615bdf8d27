//! `iocsync s1 update`: changes one IOC's validity, name, description or score.
//!
//! Whether S1's create endpoint updates an existing (type, value) in place is unconfirmed, so the
//! update is written to be correct either way: POST the new version (the old one's fields with the
//! changes applied), then, if S1 answered with a uuid other than the old one, delete the old uuid.
//! Creating first means a failure never leaves the IOC missing: at worst both versions exist for a
//! moment, and the error names the old uuid to delete. When the uuid changes, the sink's entries in
//! the state database are re-pointed to the new uuid so the pipeline keeps managing the IOC.

use super::add::with_context;
use super::pattern::Pattern;
use super::select::{self, value_pattern, Selector};
use super::{io_err, output, s1_err, Io, UpdateArgs};
use crate::app::{self, AppError};
use crate::config::Config;
use crate::sinks::sentinelone::item::valid_until;
use crate::sinks::sentinelone::{IocItem, RemoteIoc, S1Type, SentinelOneClient};
use serde_json::Value;

/// Optional S1 fields an update carries over unchanged (server fields such as `uuid`, `batchId`,
/// `scope`, `uploadTime` are S1's to set).
const CARRIED_FIELDS: [&str; 7] = [
    "severity",
    "category",
    "mitreTactic",
    "threatActors",
    "malwareNames",
    "pattern",
    "patternType",
];

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The new version of `old` with the requested changes.
pub fn new_version(
    old: &RemoteIoc,
    args: &UpdateArgs,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IocItem, AppError> {
    let kind_name = old.kind.as_deref().unwrap_or("");
    let kind = S1Type::from_name(kind_name).ok_or_else(|| {
        AppError::Other(format!(
            "IOC {} has type `{kind_name}`, which iocsync cannot write back",
            old.uuid.as_deref().unwrap_or("?")
        ))
    })?;
    let value = old.value.clone().unwrap_or_default();
    let source = old
        .source
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| super::add::DEFAULT_SOURCE.to_string());
    let mut item = IocItem::new(kind, value, source);
    item.external_id = old.external_id.clone();
    item.name = args.name.clone().or_else(|| old.name.clone());
    item.description = args.description.clone().or_else(|| old.description.clone());
    item.original_risk_score = args.score.or_else(|| {
        old.original_risk_score
            .and_then(|s| u8::try_from(s.clamp(0, 100)).ok())
    });
    item.valid_until = match args.valid_days {
        Some(days) => valid_until(kind, None, Some(days), now),
        None => old.valid_until.clone(),
    };
    item.creator = old
        .extra
        .get("creator")
        .and_then(Value::as_str)
        .map(str::to_string);
    item.labels = strings(old.extra.get("labels"));
    item.reference = strings(old.extra.get("reference"));
    for key in CARRIED_FIELDS {
        if let Some(v) = old.extra.get(key).filter(|v| !v.is_null()) {
            item.extra.insert(key.to_string(), v.clone());
        }
    }
    Ok(item)
}

async fn target(client: &SentinelOneClient, args: &UpdateArgs) -> Result<RemoteIoc, AppError> {
    let (sel, what) = match (&args.uuid, &args.value) {
        (Some(uuid), _) => (
            Selector {
                uuids: vec![uuid.trim().to_string()],
                ..Default::default()
            },
            format!("uuid {}", uuid.trim()),
        ),
        (None, Some(value)) => {
            // An exact value: a `%` in it (URLs) is literal here.
            let escaped = value.replace('\\', "\\\\").replace('%', "\\%");
            (
                Selector {
                    values: vec![value_pattern(&escaped)],
                    kind: args.kind,
                    ..Default::default()
                },
                format!(
                    "value `{}`",
                    Pattern::new(&escaped).literal().unwrap_or(value)
                ),
            )
        }
        (None, None) => return Err(AppError::Other("give --uuid or --value".into())),
    };
    let mut found = select::fetch(client, &sel, None)
        .await
        .map_err(s1_err)?
        .items;
    match found.len() {
        0 => Err(AppError::Other(format!(
            "no IOC with {what} in {}",
            client.scope().describe()
        ))),
        1 => Ok(found.remove(0)),
        n => {
            let list: Vec<String> = found
                .iter()
                .map(|i| {
                    format!(
                        "  {} {} {}",
                        i.uuid.as_deref().unwrap_or("-"),
                        i.kind.as_deref().unwrap_or("-"),
                        i.valid_until.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            Err(AppError::Other(format!(
                "{n} IOCs have {what}; choose one with --uuid:\n{}",
                list.join("\n")
            )))
        }
    }
}

/// Runs `update`.
pub async fn run(
    cfg: &Config,
    client: &SentinelOneClient,
    args: &UpdateArgs,
    io: &mut Io<'_>,
) -> Result<(), AppError> {
    if args.valid_days.is_none()
        && args.name.is_none()
        && args.description.is_none()
        && args.score.is_none()
    {
        return Err(AppError::Other(
            "nothing to update: give --valid-days, --name, --description or --score".into(),
        ));
    }
    let old = target(client, args).await?;
    let old_uuid = old.uuid.clone().unwrap_or_default();
    if let Some(scope_id) = old.scope_id.as_deref() {
        let s = client.scope();
        let ours = s
            .account_ids
            .iter()
            .chain(&s.site_ids)
            .chain(&s.group_ids)
            .any(|id| id == scope_id);
        if !ours {
            writeln!(
                io.err,
                "note: IOC {old_uuid} lives in {} {scope_id}; its new version is written to the \
                 configured scope ({})",
                old.scope.as_deref().unwrap_or("scope"),
                s.describe()
            )
            .map_err(io_err)?;
        }
    }
    let item = new_version(&old, args, chrono::Utc::now())?;
    let created = client
        .create(std::slice::from_ref(&item))
        .await
        .map_err(|e| with_context(s1_err(e), &format!("IOC {old_uuid} is unchanged")))?;
    let Some(new) = created.into_iter().next() else {
        return Err(AppError::Other(format!(
            "SentinelOne accepted the new version of {old_uuid} but returned no IOC; check with \
             `iocsync s1 list --value {}`",
            item.value
        )));
    };
    let new_uuid = new.uuid.clone().unwrap_or_default();
    if new_uuid.is_empty() || new_uuid == old_uuid {
        writeln!(io.err, "updated {old_uuid} in place").map_err(io_err)?;
    } else {
        client
            .delete_uuids(std::slice::from_ref(&old_uuid))
            .await
            .map_err(|e| {
                with_context(
                    s1_err(e),
                    &format!(
                        "the new version {new_uuid} was created but the old {old_uuid} is still \
                         there: remove it with `iocsync s1 delete --uuid {old_uuid}`"
                    ),
                )
            })?;
        writeln!(
            io.err,
            "replaced {old_uuid} by {new_uuid} (SentinelOne created a new entry; the old one was \
             deleted)"
        )
        .map_err(io_err)?;
        let repointed = app::open_state(cfg)
            .and_then(|s| Ok(s.repoint_remote_id("sentinelone", &old_uuid, &new_uuid)?));
        if let Err(e) = repointed {
            writeln!(
                io.err,
                "warning: the state database still maps the pipeline's entry to {old_uuid}: {e}"
            )
            .map_err(io_err)?;
        }
    }
    output::write(io.out, args.format, &[new], Some(" updated")).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_version_keeps_fields_and_applies_changes() {
        let mut old = RemoteIoc {
            uuid: Some("u1".into()),
            kind: Some("DNS".into()),
            value: Some("evil.example".into()),
            source: Some("OpenCTI".into()),
            external_id: Some("indicator--1".into()),
            name: Some("old name".into()),
            original_risk_score: Some(80),
            valid_until: Some("2030-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        old.extra.insert("labels".into(), json!(["apt"]));
        old.extra.insert("severity".into(), json!("High"));
        old.extra.insert("batchId".into(), json!("b"));
        let args = UpdateArgs {
            name: Some("new name".into()),
            ..Default::default()
        };
        let item = new_version(&old, &args, chrono::Utc::now()).expect("item");
        assert_eq!(item.name.as_deref(), Some("new name"));
        assert_eq!(item.external_id.as_deref(), Some("indicator--1"));
        assert_eq!(item.original_risk_score, Some(80));
        assert_eq!(item.valid_until.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(item.labels, ["apt"]);
        assert_eq!(item.extra.get("severity"), Some(&json!("High")));
        assert!(item.extra.get("batchId").is_none());

        old.kind = Some("EMAIL".into());
        assert!(new_version(&old, &args, chrono::Utc::now()).is_err());
    }
}
