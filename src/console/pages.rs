//! The console's HTML, rendered on the server with maud: one function per page, a shared layout.
//! Every page is complete without JavaScript; `console.js` only adds the live log stream.

use super::data::{Dashboard, RunSummary, Status};
use super::s1view::{S1Query, S1View};
use crate::logring::LogLine;
use crate::state::{IocRow, IocSearch};
use maud::{html, Markup, DOCTYPE};

/// What every authenticated page needs: who is logged in and the CSRF token for its forms.
pub struct Ctx<'a> {
    /// The logged-in user.
    pub user: &'a str,
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// True when this console can control the daemon (`iocsync run`), false in `iocsync console`.
    pub can_control: bool,
}

const NAV: &[(&str, &str)] = &[
    ("/", "Dashboard"),
    ("/status", "Status"),
    ("/live", "Live"),
    ("/runs", "Runs"),
    ("/iocs", "IOCs"),
    ("/settings", "Settings"),
];

fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(secs) = refresh { meta http-equiv="refresh" content=(secs); }
            title { (title) " · iocsync" }
            link rel="stylesheet" href="/assets/console.css";
            script src="/assets/console.js" defer {}
        }
    }
}

/// The frame of an authenticated page.
pub fn layout(ctx: &Ctx, active: &str, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, refresh))
            body {
                header {
                    span.brand { "iocsync" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(*href == active).then_some("active")] { (label) }
                        }
                    }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(ctx.csrf);
                        span.user { (ctx.user) }
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The login page; `error` after a failed attempt.
pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", None))
            body.login {
                main {
                    h1 { "iocsync console" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        label { "User" input name="user" autocomplete="username" required; }
                        label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {}s", secs % 60)
    }
}

/// The bar chart of live entries by IOC type: inline SVG, a `<title>` per bar for hover text.
fn chart(data: &[(String, i64)]) -> Markup {
    let max = data.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row_h = 26;
    let height = (data.len() as i64 * row_h).max(row_h);
    html! {
        @if data.is_empty() {
            p.muted { "No live entries yet." }
        } @else {
            svg.chart viewBox={"0 0 600 " (height)} role="img" aria-label="Live entries by IOC type" {
                @for (i, (kind, n)) in data.iter().enumerate() {
                    @let y = i as i64 * row_h;
                    @let w = 1.max(n * 400 / max);
                    g {
                        title { (kind) ": " (n) }
                        text x="0" y=(y + 17) { (kind) }
                        rect x="110" y=(y + 4) width=(w) height="18" rx="3" {}
                        text x=(120 + w) y=(y + 17) { (n) }
                    }
                }
            }
        }
    }
}

fn stat(label: &str, value: impl maud::Render) -> Markup {
    html! { div.stat { span.label { (label) } span.value { (value) } } }
}

/// A figure from the state's count, or "…" while the first count runs.
fn counted(d: &Dashboard, value: impl ToString) -> String {
    if d.counted_at.is_some() {
        value.to_string()
    } else {
        "…".into()
    }
}

/// `/`.
pub fn dashboard(ctx: &Ctx, d: &Dashboard) -> Markup {
    let last = |f: fn(&RunSummary) -> u64| counted(d, d.last_run.as_ref().map(f).unwrap_or(0));
    let body = html! {
        section.stats {
            (stat("IOCs live in sinks (lifetime)", counted(d, d.live_total)))
            (stat("Created, last run", last(|r| r.created)))
            (stat("Pushed, last run", last(|r| r.pushed)))
            (stat("Received, last run", last(|r| r.received)))
            (stat("Created, recorded runs", counted(d, d.created_recorded_runs)))
            (stat("SentinelOne API calls", d.s1_api_calls.map(|n| n.to_string()).unwrap_or_else(|| "—".into())))
            (stat("Uptime", duration(d.uptime_secs)))
            (stat("Pending intents", counted(d, d.pending_intents)))
            (stat("Dead letters", counted(d, d.dead_letters)))
            (stat("Next scheduled run", d.control.as_ref().and_then(|c| c.next_run)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "—".into())))
        }
        @match (&d.counted_at, d.count_ms, d.recount_secs) {
            (Some(at), Some(ms), Some(every)) => {
                p.muted.asof { "Figures from the state as of " (at) " (counted in " (ms) " ms, in the background; recounted every " (every) " s while the dashboard is open)." }
            }
            (Some(at), _, _) => { p.muted.asof { "Figures from the state as of " (at) "." } }
            _ => { p.note { "Counting the state for the first time (about a second per million values): the figures marked … appear on the next refresh." } }
        }
        section {
            h2 { "Live entries by IOC type" }
            (chart(&d.live_by_kind))
        }
        section {
            h2 { "Source position" }
            @if d.checkpoints.is_empty() { p.muted { "No checkpoint saved yet." } }
            @else {
                table {
                    thead { tr { th { "Source" } th { "Position" } th { "Saved" } th { "Lag" } } }
                    tbody { @for c in &d.checkpoints {
                        tr { td { (c.source) } td.mono { (c.position) } td { (c.saved) } td { (duration(c.lag_secs as u64)) } }
                    } }
                }
            }
            @if !d.live_by_sink.is_empty() {
                h2 { "Live entries per sink" }
                table { tbody { @for (s, n) in &d.live_by_sink { tr { td { (s) } td.num { (n) } } } } }
            }
        }
        @if let Some(c) = &d.control {
            p.muted { "Worker: " (c.source) (if c.paused { ", paused" } else { "" }) (if c.run_in_progress { ", run in progress" } else { "" }) }
        }
    };
    layout(ctx, "/", "Dashboard", Some(15), body)
}

/// `/status`.
pub fn status(ctx: &Ctx, s: &Status) -> Markup {
    let body = html! {
        p.muted { "Same probes and wording as " code { "iocsync check" } ". Full check at " (s.checked_at) "; " b { "Re-check" } " probes one row again." }
        div.scroll { table.status {
            thead { tr { th { "" } th { "Component" } th { "Result" } th { "Checked at" } th { "" } } }
            tbody { @for r in &s.rows {
                tr class=(if r.ok { "ok" } else { "fail" }) {
                    td.mark { (if r.ok { "✓" } else { "✗" }) }
                    td.component { (r.component) }
                    td { (r.detail) }
                    td.when data-label="checked" { (r.checked_at) }
                    td { form method="post" action="/control/recheck" {
                        input type="hidden" name="csrf" value=(ctx.csrf);
                        input type="hidden" name="component" value=(r.component);
                        button type="submit" { "Re-check" }
                    } }
                }
            } }
        } }
    };
    layout(ctx, "/status", "Status", None, body)
}

/// `/runs`.
pub fn runs(ctx: &Ctx, runs: &[RunSummary]) -> Markup {
    let body = html! {
        @if runs.is_empty() { p.muted { "No runs recorded yet." } }
        @else {
            div.scroll { table {
                thead { tr { th { "Started" } th { "Source" } th { "Secs" } th { "Received" } th { "Pushed" } th { "Skipped" } th { "Dead" } th { "Errors" } } }
                tbody { @for r in runs {
                    tr {
                        td { a href={"/runs/" (r.id)} { (r.started) } }
                        td { (r.source) }
                        td.num { (format!("{:.1}", r.duration_secs)) }
                        td.num { (r.received) }
                        td.num { (r.pushed) }
                        td.num { (r.skipped.iter().map(|(_, n)| n).sum::<u64>()) }
                        td.num { (r.dead_lettered) }
                        td.num { (r.errors.len()) }
                    }
                } }
            } }
        }
    };
    layout(ctx, "/runs", "Runs (last 20)", None, body)
}

fn level_class(level: &str) -> &'static str {
    match level {
        "ERROR" => "lv-error",
        "WARN" => "lv-warn",
        "INFO" => "lv-info",
        "DEBUG" => "lv-debug",
        _ => "lv-trace",
    }
}

fn log_lines(lines: &[LogLine]) -> Markup {
    html! {
        @for l in lines {
            div class={"line " (level_class(l.level))} {
                span.at { (l.at.format("%H:%M:%S")) } " " span.lv { (l.level) } " " (l.message)
            }
        }
    }
}

/// `/runs/{id}`.
pub fn run(ctx: &Ctx, r: &RunSummary, lines: &[LogLine]) -> Markup {
    let body = html! {
        section.stats {
            (stat("Source", &r.source))
            (stat("Duration", format!("{:.1} s", r.duration_secs)))
            (stat("Received", r.received))
            (stat("Pushed", r.pushed))
            (stat("Ignored (disabled feed)", r.ignored_disabled_feed))
            (stat("Dead letters", r.dead_lettered))
        }
        div.cols {
            section { h2 { "Pushed per sink and type" }
                table { tbody { @for (s, t, n) in &r.pushed_by { tr { td { (s) } td { (t) } td.num { (n) } } } } } }
            section { h2 { "Skipped by reason" }
                table { tbody { @for (k, n) in &r.skipped { tr { td { (k) } td.num { (n) } } } } } }
        }
        @if !r.errors.is_empty() { h2 { "Errors" } ul { @for e in &r.errors { li { (e) } } } }
        h2 { "Log" }
        div.log { @if lines.is_empty() { p.muted { "No log lines recorded for this run." } } (log_lines(lines)) }
    };
    layout(
        ctx,
        "/runs",
        &format!("Run {} · {}", r.id, r.started),
        None,
        body,
    )
}

/// `/live`: the last lines server-rendered; `console.js` appends new ones from `/live/stream`.
pub fn live(
    ctx: &Ctx,
    lines: &[LogLine],
    control: Option<&crate::control::ControlSnapshot>,
) -> Markup {
    let disabled = !ctx.can_control;
    let body = html! {
        div.controls {
            @for (action, label) in [("start", "Start run now"), ("stop", "Stop"), ("resume", "Resume")] {
                form method="post" action={"/control/" (action)} {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    button type="submit" disabled[disabled] { (label) }
                }
            }
            label.pause { input type="checkbox" id="pause-scroll"; " Pause scrolling" }
        }
        @if disabled {
            p.muted { "This console was started with " code { "iocsync console" } ": it reads the state only and cannot control a worker. Use the console of " code { "iocsync run" } " (console.enabled) to start or stop runs." }
        }
        @if let Some(c) = control {
            p.muted { "Worker " (c.source) ": " (if c.paused { "paused" } else { "running" })
              @if !c.supports_run_now { " · Start run now: not supported by this source (it streams continuously)" } }
        }
        div.log #log data-stream="/live/stream" { (log_lines(lines)) }
    };
    layout(ctx, "/live", "Live console", None, body)
}

/// `/iocs`.
pub fn iocs(ctx: &Ctx, q: &IocSearch, rows: &[IocRow], has_next: bool) -> Markup {
    let page = q.page.unwrap_or(0);
    let link = |p: u32| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("value", &q.value),
            ("kind", &q.kind),
            ("indicator", &q.indicator),
            ("sink", &q.sink),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                s.append_pair(k, v);
            }
        }
        s.append_pair("page", &p.to_string());
        format!("/iocs?{}", s.finish())
    };
    let body = html! {
        (ioc_tabs("/iocs"))
        form.search method="get" action="/iocs" {
            input name="value" placeholder="value starts with" value=[q.value.as_deref()];
            input name="kind" placeholder="type (ipv4, sha256…)" value=[q.kind.as_deref()];
            input name="indicator" placeholder="indicator id" value=[q.indicator.as_deref()];
            input name="sink" placeholder="sink" value=[q.sink.as_deref()];
            button type="submit" { "Search" }
        }
        @if rows.is_empty() { p.muted { "Nothing matches." } }
        @else {
            div.scroll { table {
                thead { tr { th { "Value" } th { "Type" } th { "Sink" } th { "Remote id" } th { "Status" } th { "Held by" } } }
                tbody { @for r in rows {
                    tr {
                        td.mono { (r.value) }
                        td { (r.kind) }
                        td { (r.sink) }
                        td.mono { (r.remote_id.as_deref().unwrap_or("—")) }
                        td { (r.status) }
                        td.mono { @for h in &r.holders { a href={"/iocs?indicator=" (h)} { (h) } br; } }
                    }
                } }
            } }
        }
        nav.pager {
            @if page > 0 { a href=(link(page - 1)) { "← Previous" } }
            span { "Page " (page + 1) }
            @if has_next { a href=(link(page + 1)) { "Next →" } }
        }
    };
    layout(ctx, "/iocs", "IOCs", None, body)
}

/// The IOC page's two views.
fn ioc_tabs(active: &str) -> Markup {
    html! {
        nav.tabs {
            @for (href, label) in [("/iocs", "iocsync's state"), ("/iocs/s1", "SentinelOne")] {
                a href=(href) class=[(href == active).then_some("active")] { (label) }
            }
        }
    }
}

/// `/iocs/s1`: SentinelOne's view.
pub fn iocs_s1(ctx: &Ctx, q: &S1Query, v: &S1View) -> Markup {
    const PATH: &str = "/iocs/s1";
    let body = html! {
        (ioc_tabs(PATH))
        form.search method="get" action=(PATH) {
            input name="kind" placeholder="type (IPV4, DNS, SHA256…)" value=[q.kind.as_deref()];
            input name="value" placeholder="exact value" value=[q.value.as_deref()];
            input name="external_id" placeholder="externalId (indicator id)" value=[q.external_id.as_deref()];
            button type="submit" { "Search SentinelOne" }
        }
        @match v {
            S1View::NotConfigured { message } => { p.note { (message) } }
            S1View::BadQuery { message } => { p.error role="alert" { "Invalid filter: " (message) } }
            S1View::Failed { message } => { p.error role="alert" { "SentinelOne could not be read: " (message) } }
            S1View::Page(page) => {
                p.muted {
                    "What SentinelOne holds in " (page.scope)
                    @if let Some(n) = page.total_items { " · " (n) " matching" }
                    " · page " (q.page) ". Entries with an indicator id as externalId are iocsync's."
                }
                @if page.rows.is_empty() { p.muted { "Nothing matches." } }
                @else {
                    div.scroll { table.s1 {
                        thead { tr { th { "Value" } th { "Type" } th { "uuid" } th { "externalId" } th { "Source" } th { "Valid until" } th { "iocsync" } th { "Held by" } } }
                        tbody { @for r in &page.rows {
                            tr class=(if r.managed { "managed" } else { "foreign" }) {
                                td.mono { (r.value.as_deref().unwrap_or("—")) }
                                td data-label="type" { (r.kind.as_deref().unwrap_or("—")) }
                                td.mono data-label="uuid" { (r.uuid.as_deref().unwrap_or("—")) }
                                td.mono data-label="externalId" { (r.external_id.as_deref().unwrap_or("—")) }
                                td data-label="source" { (r.source.as_deref().unwrap_or("—")) }
                                td data-label="valid until" { (r.valid_until.as_deref().unwrap_or("—")) }
                                td { span class={"badge " (if r.managed { "badge-ours" } else { "badge-foreign" })} { (if r.managed { "managed" } else { "foreign" }) } br; small { (r.verdict) } }
                                td.mono data-label="held by" { @if let Some(h) = &r.state {
                                    @for i in &h.holders { a href={"/iocs?indicator=" (i)} { (i) } br; }
                                    @if h.holders.is_empty() { "created for " a href={"/iocs?indicator=" (h.indicator_id)} { (h.indicator_id) } }
                                } @else { "—" } }
                            }
                        } }
                    } }
                }
                nav.pager {
                    @if let Some(prev) = q.prev_link(PATH) {
                        a href=(q.first_link(PATH)) { "⇤ First" }
                        a href=(prev) rel="prev" { "← Previous" }
                    }
                    span { "Page " (q.page) }
                    @if let Some(next) = &page.next_cursor { a href=(q.next_link(PATH, next)) rel="next" { "Next →" } }
                }
            }
        }
    };
    layout(ctx, "/iocs", "IOCs · SentinelOne", None, body)
}

/// A small error page.
pub fn message(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" { (head(title, None)) body { main { h1 { (title) } p { (text) } p { a href="/" { "Back" } } } } }
    }
}
