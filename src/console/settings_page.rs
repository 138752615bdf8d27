//! `/settings` in HTML (maud): the MISP settings the console edits (schedule, feed toggles,
//! `last_run_time` behind a confirmation), then every effective setting with its source.

use super::pages::{layout, Ctx};
use super::settings::{MispView, SettingsView};
use crate::sources::misp::overrides::{ScheduleSetting, Stamp};
use maud::{html, Markup};

fn hidden_csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

fn stamp(s: &Stamp) -> Markup {
    html! { span.src.src-console { "console" } " " small.muted { "set by " (s.by) " at " (s.at) } }
}

fn schedule(ctx: &Ctx, m: &MispView, off: bool) -> Markup {
    let (interval, at, days, tz, daily) = match &m.schedule_form {
        ScheduleSetting::Interval { every } => {
            (every.clone(), String::new(), 1, "UTC".into(), false)
        }
        ScheduleSetting::Daily {
            at,
            every_days,
            timezone,
        } => (
            String::new(),
            at.clone(),
            *every_days,
            timezone.clone(),
            true,
        ),
    };
    html! {
        section #schedule {
            h2 { "MISP schedule" }
            p { "In force: " strong { (m.schedule) } " — "
                @match (&m.schedule_override, &m.schedule_problem) {
                    (Some(o), None) => (stamp(&o.set)),
                    _ => span.src { "config" },
                }
            }
            @if let Some(p) = &m.schedule_problem { p.error { (p) } }
            form.edit method="post" action="/settings/misp/schedule" {
                (hidden_csrf(ctx))
                fieldset disabled[off] {
                    label.choice { input type="radio" name="form" value="interval" checked[!daily]; " Every" }
                    label { "Interval " input name="interval" value=(interval) placeholder="15m, 2h, 1day" size="10"; }
                    label.choice { input type="radio" name="form" value="daily" checked[daily]; " At a time of day" }
                    label { "Time " input name="first_run_at" value=(at) placeholder="HH:MM" size="6"; }
                    label { "Every " input name="repeat_days" type="number" min="1" value=(days) size="3"; " day(s)" }
                    label { "Time zone " input name="timezone" value=(tz) placeholder="Europe/Paris" size="16"; }
                    button type="submit" name="action" value="save" { "Save schedule" }
                }
            }
            @if m.schedule_override.is_some() {
                form.edit method="post" action="/settings/misp/schedule" {
                    (hidden_csrf(ctx))
                    button.secondary type="submit" name="action" value="reset" disabled[off] { "Use the config's schedule" }
                }
            }
        }
    }
}

fn feeds(ctx: &Ctx, m: &MispView, off: bool) -> Markup {
    html! {
        section #feeds {
            h2 { "MISP feeds" }
            @if let Some(e) = &m.feeds_error { p.error { (e) } }
            @else if m.feeds.is_empty() { p.muted { "This MISP has no feeds." } }
            @else {
                div.scroll { table.feeds {
                    thead { tr { th { "Id" } th { "Feed" } th { "In MISP" } th { "iocsync" } th { "Decided by" } th { "" } } }
                    tbody { @for f in &m.feeds {
                        tr data-feed=(f.id) {
                            td.num { (f.id) }
                            td { (f.name) }
                            td { (if f.enabled_in_misp { "enabled" } else { "disabled" }) }
                            td.pushed { (if f.pushed_by_iocsync { "pushed" } else { "disabled" }) }
                            td { span class={"src src-" (f.decided_by.replace('.', "-"))} { (f.decided_by) }
                                 @if let Some(by) = &f.toggled_by { br; small.muted { (by) } } }
                            td { form.toggle method="post" action="/settings/misp/feeds" {
                                (hidden_csrf(ctx))
                                input type="hidden" name="feed" value=(f.id);
                                @if f.pushed_by_iocsync {
                                    button type="submit" name="pushed" value="no" disabled[off] { "Disable" }
                                } @else {
                                    button type="submit" name="pushed" value="yes" disabled[off] { "Push" }
                                }
                                @if f.decided_by == "console" {
                                    button.secondary type="submit" name="pushed" value="config" disabled[off] { "Use config" }
                                }
                            } }
                        }
                    } }
                } }
                p.muted { "A toggle applies from the next run; attributes already pushed from a feed disabled here are withdrawn, and those of a feed enabled here added, at the next full resync (misp.resync_interval)." }
            }
        }
    }
}

fn last_run(ctx: &Ctx, m: &MispView, off: bool) -> Markup {
    html! {
        section #last-run {
            h2 { "MISP last_run_time (advanced)" }
            p { "Checkpoint: " span.mono { (m.last_run_time.as_deref().unwrap_or("none yet")) } }
            @if let Some(o) = &m.last_run_override {
                p { "Set in the console: " span.mono { (chrono::DateTime::from_timestamp(o.at, 0).map(|t| t.to_rfc3339()).unwrap_or_default()) } " "
                    (stamp(&o.set)) " — "
                    @match &o.applied { Some(a) => { "taken up by the run of " (a.at) }, None => { "applies at the next run" } }
                }
            }
            form.edit method="post" action="/settings/misp/last_run_time" {
                (hidden_csrf(ctx))
                fieldset disabled[off] {
                    label { "Read from (UTC) " input name="value" type="datetime-local" step="1" required; }
                    label.confirm { input type="checkbox" name="confirm" value="yes"; " I understand this re-reads (earlier) or skips (later) MISP attributes" }
                    button type="submit" name="action" value="save" { "Set last_run_time" }
                }
            }
            @if m.last_run_override.as_ref().is_some_and(|o| o.applied.is_none()) {
                form.edit method="post" action="/settings/misp/last_run_time" {
                    (hidden_csrf(ctx))
                    button.secondary type="submit" name="action" value="reset" disabled[off] { "Cancel it" }
                }
            }
        }
    }
}

/// `/settings`; `error` after a refused edit.
pub fn settings(ctx: &Ctx, v: &SettingsView, error: Option<&str>) -> Markup {
    let off = !v.editable;
    let body = html! {
        p.note { "Credentials and URLs are not editable here: they stay in the environment or config.yml, where secret stores inject them. Secrets show only their last characters." }
        @if off {
            p.note { "This console was started with " code { "iocsync console" } ": it reads the state only, so nothing can be edited here. Edit the MISP settings in the console of " code { "iocsync run" } " (console.enabled)." }
        } @else {
            p.muted { "The MISP schedule, feed toggles and last_run_time set here are stored in the state database, override config.yml and the environment, and apply from the next run." }
        }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some(m) = &v.misp {
            (schedule(ctx, m, off))
            (feeds(ctx, m, off))
            (last_run(ctx, m, off))
        }
        h2 { "Every setting" }
        div.scroll { table.settings {
            thead { tr { th { "Key" } th { "Value" } th { "Source" } } }
            tbody { @for r in &v.rows {
                tr {
                    td.mono { (r.key) @if let Some(e) = &r.env { br; small { (e) } } }
                    td.mono { (r.value) }
                    td { span class={"src src-" (r.source.replace('.', "-"))} { (r.source) } }
                }
            } }
        } }
    };
    layout(ctx, "/settings", "Settings", None, body)
}
