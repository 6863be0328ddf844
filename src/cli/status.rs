//! The status of one rollout for people: `rollout status` (and each
//! redraw of `--watch` and the demo): where it is in its steps, what it
//! waits for, each trigger's estimate and interval against its tolerance in
//! its unit, its evidence on the way to the boundary and, below, the same
//! in words (the daemon's `summary`, from `monitor::words`); gates,
//! approvals, sources, the router. Fitted to a width, instants relative to
//! a `now` the caller passes; it prints nothing itself.

use super::terminal::{Table, ellipsize_left, when, wrap};
use crate::time::Timestamp;
use crate::wire::{EvidenceState, Rollout, TriggerView};

/// A number short enough for a table cell: four significant digits at
/// most, trailing zeros trimmed.
fn short(x: f64) -> String {
    let a = x.abs();
    let s = if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// `x` in the trigger's unit: `2.4%`, `×1.05`, `250ms`, `12s`, `3.2 score`.
fn with_unit(x: f64, unit: Option<&str>) -> String {
    match unit {
        Some("%") => format!("{}%", short(x)),
        Some(u) if u.starts_with('×') => format!("×{}", short(x)),
        Some("ms") => format!("{}ms", short(x)),
        Some("s") => format!("{}s", short(x)),
        Some(u) => format!("{} {u}", short(x)),
        // A daemon before units: say so rather than print a bare number.
        None => format!("{} (unit unknown)", short(x)),
    }
}

/// The estimate cell: `×1.1 [×0.95, ×1.32]`, `-` without one.
fn estimate_cell(t: &TriggerView) -> String {
    let unit = t.unit.as_deref();
    let Some(est) = t.estimate else {
        return "-".into();
    };
    let mut cell = with_unit(est, unit);
    if let Some((lo, hi)) = t.interval {
        let b = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| with_unit(x, unit));
        cell.push_str(&format!(" [{}, {}]", b(lo), b(hi)));
    }
    cell
}

/// The evidence cell: how far on the way to the boundary.
fn evidence_cell(t: &TriggerView) -> String {
    match (t.state, t.progress) {
        (EvidenceState::Fired, _) => "boundary crossed".into(),
        (_, Some(p)) => format!("{:.0}% of the way", (p * 100.0).floor()),
        (_, None) => "-".into(),
    }
}

/// A state as the table shows it.
fn state_cell(state: EvidenceState) -> &'static str {
    match state {
        EvidenceState::NoData => "no data yet",
        EvidenceState::Gathering => "gathering",
        EvidenceState::Shown => "shown",
        EvidenceState::Fired => "fired",
        EvidenceState::Stopped => "stopped",
    }
}

/// `risk`, `risk and compliance`, `a, b and c`.
fn words_list(items: &[String]) -> String {
    match items {
        [] => "none".into(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// `step 2 of 6`: the API's step is an index into the policy's steps.
pub fn step_of(v: &Rollout) -> String {
    format!("step {} of {}", v.step + 1, v.steps)
}

/// What the rollout waits for, said once: the daemon's text may already
/// start with "waiting for".
fn waiting_line(w: &str) -> String {
    format!(
        "waiting for {}",
        w.strip_prefix("waiting for ").unwrap_or(w)
    )
}

/// The status view: what `kubectl argo rollouts get rollout` shows, plus
/// each trigger's estimate and interval against its tolerance in its unit
/// and its evidence as a share of the way to the boundary, in words below;
/// fitted to `width` columns, instants relative to `now`.
pub fn render_status(v: &Rollout, width: usize, now: Timestamp) -> String {
    let mut out = String::new();
    out.push_str(&wrap(
        &format!(
            "rollout {}  service {}  policy {} ({}{})",
            v.id,
            v.service,
            v.policy,
            v.change_type.as_str(),
            if v.dry_run { ", dry run" } else { "" }
        ),
        width,
        "",
    ));
    // Long versions give way, so the versions keep their one line.
    let room = width.saturating_sub(3) / 2;
    out.push_str(&format!(
        "{} → {}\n",
        ellipsize_left(&v.baseline, room),
        ellipsize_left(&v.canary, room)
    ));
    out.push_str(&wrap(
        &format!(
            "{}, {}, weight {}%, {} in step, {} canary requests in step",
            v.state.as_str(),
            step_of(v),
            v.weight,
            crate::time::format_duration(std::time::Duration::from_secs(v.time_in_step_s)),
            v.canary_requests_in_step
        ),
        width,
        "",
    ));
    out.push_str(&wrap(
        &format!(
            "started {} by {}; updated {}",
            when(&v.started_at, now),
            v.started_by,
            when(&v.updated_at, now)
        ),
        width,
        "",
    ));
    out.push_str(&wrap(&format!("reason: {}", v.reason), width, ""));
    if let Some(w) = &v.waiting_for {
        out.push_str(&wrap(&waiting_line(w), width, ""));
    }
    let mut table = Table::new(&[
        ("TRIGGER", true, false),
        ("STATE", false, false),
        ("ESTIMATE", true, false),
        ("TOLERANCE", false, false),
        ("EVIDENCE", false, false),
    ]);
    for t in &v.triggers {
        table.row(vec![
            t.name.clone(),
            state_cell(t.state).into(),
            estimate_cell(t),
            t.tolerance
                .map_or_else(|| "-".to_string(), |x| with_unit(x, t.unit.as_deref())),
            evidence_cell(t),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render(width));
    for t in &v.triggers {
        // A daemon before words: its verdict, never alone as "ok".
        let summary = if t.summary.is_empty() {
            format!("{} ({} samples)", verdict_words(t.verdict), t.samples)
        } else {
            t.summary.clone()
        };
        out.push_str(&wrap(&format!("{}: {summary}", t.name), width, "  "));
        if let Some(note) = &t.note
            && !summary.contains(note.as_str())
        {
            out.push_str(&wrap(&format!("note: {note}"), width, "    "));
        }
    }
    if !v.gates.is_empty() {
        let mut gates = Table::new(&[
            ("GATE", true, false),
            ("STATE", false, false),
            ("BEFORE WEIGHT", false, true),
        ]);
        for g in &v.gates {
            gates.row(vec![
                g.name.clone(),
                if g.shown {
                    "shown".into()
                } else {
                    state_cell(g.state).into()
                },
                format!("{}%", g.before),
            ]);
        }
        out.push('\n');
        out.push_str(&gates.render(width));
        for g in v.gates.iter().filter(|g| !g.summary.is_empty()) {
            out.push_str(&wrap(&format!("{}: {}", g.name, g.summary), width, "  "));
        }
    }
    if let Some(a) = &v.approvals {
        let given: Vec<String> = a
            .given
            .iter()
            .map(|g| format!("{} as {} ({})", g.actor, g.role, when(&g.at, now)))
            .collect();
        let missing: Vec<String> = a
            .roles
            .iter()
            .filter(|r| !a.given.iter().any(|g| &g.role == *r))
            .cloned()
            .collect();
        out.push('\n');
        out.push_str(&wrap(
            &format!(
                "approvals at step {}: needs {}; given by {}; still missing {}; deadline {}",
                a.step + 1,
                words_list(&a.roles),
                words_list(&given),
                words_list(&missing),
                a.deadline
                    .as_deref()
                    .map_or_else(|| "none".to_string(), |d| when(d, now))
            ),
            width,
            "",
        ));
    }
    if let Some(src) = &v.source {
        let mut line = format!("sources: {} ({}", words_list(&src.sources), src.status);
        if let Some(at) = &src.last_success_at {
            line.push_str(&format!(", last pulled {}", when(at, now)));
        }
        if let Some(e) = &src.last_error {
            line.push_str(&format!(": {e}"));
        }
        line.push(')');
        out.push('\n');
        out.push_str(&wrap(&line, width, ""));
    }
    if let Some(e) = &v.router_error {
        out.push_str(&wrap(&format!("router: {e}"), width, ""));
    }
    if let Some(i) = &v.incident {
        out.push_str(&format!("incident {i}\n"));
    }
    out
}

/// One line per change for a watch that is not drawn on a terminal.
pub fn watch_line(v: &Rollout) -> String {
    format!(
        "{} {} weight {}% {}",
        v.state.as_str(),
        step_of(v),
        v.weight,
        v.reason
    )
}

/// A verdict from a daemon that sends no state, in words that never read
/// as healthy on their own.
fn verdict_words(v: crate::engine::TriggerVerdict) -> &'static str {
    match v {
        crate::engine::TriggerVerdict::Ok => "no evidence of harm so far",
        crate::engine::TriggerVerdict::Inconclusive => "too little data to test yet",
        crate::engine::TriggerVerdict::Fired => "fired",
    }
}
