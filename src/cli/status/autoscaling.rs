//! The autoscaling part of `sluice status` under `sluice up`: standard against reserved
//! instances, and each step of every Revision's last decision (reactive → forecast → window →
//! bounds → clamped → standard + reserved), with a predictive Revision's forecast against what
//! is observed.

use crate::table::Table;
use crate::up::{RevisionView, ServingView};

/// The INSTANCES cell: `ready/total (want N)` of standard instances, then reserved ones.
pub(super) fn instances_cell(r: &RevisionView, want: u32) -> String {
    let (reserved, standard): (Vec<_>, Vec<_>) = r.instances.iter().partition(|i| i.reserved);
    let ready = |v: &[&crate::up::InstanceView]| v.iter().filter(|i| i.ready).count();
    let mut cell = format!("{}/{} (want {want})", ready(&standard), standard.len());
    let want_reserved = r.scaling.as_ref().map_or(0, |s| s.reserved);
    if !reserved.is_empty() || want_reserved > 0 {
        let serving = r.scaling.as_ref().is_some_and(|s| s.reserved_serving);
        cell.push_str(&format!(
            " + reserved {}/{}{}",
            ready(&reserved),
            reserved.len(),
            if serving { " serving" } else { "" }
        ));
    }
    cell
}

/// The table of every scaled Revision's decision steps (empty when none is scaled).
pub(super) fn table(s: &ServingView) -> String {
    let mut t = Table::new([
        "REVISION", "CLASS", "OBSERVED", "REACTIVE", "FORECAST", "WINDOW", "BOUNDS", "CLAMPED",
        "STANDARD", "RESERVED",
    ]);
    for r in &s.revisions {
        let Some(sc) = &r.scaling else {
            continue;
        };
        let steps = sc.steps.as_ref();
        let n = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let forecast = match (&sc.forecast, steps.and_then(|s| s.forecast)) {
            (Some(f), Some(instances)) => format!(
                "{instances} (demand {} = {} + margin {}; actual {}; ahead {}s)",
                f.value, f.seasonal, f.margin, f.actual, f.lookahead_s
            ),
            (Some(f), None) => format!(
                "none yet ({} min of history; actual {})",
                f.history_minutes, f.actual
            ),
            (None, _) => "-".into(),
        };
        let bounds = steps.map_or_else(
            || "-".to_string(),
            |s| {
                let max = if s.max == 0 {
                    "∞".to_string()
                } else {
                    s.max.to_string()
                };
                format!("{}..{max}", s.min)
            },
        );
        let reserved = if sc.reserved == 0 {
            "-".to_string()
        } else {
            let mut cell = sc.reserved.to_string();
            if sc.reserved_serving {
                cell.push_str(" serving");
            }
            if let Some(t) = &sc.reserve_type {
                cell.push_str(&format!(" ({t})"));
            }
            cell
        };
        t.row([
            format!("{}/{}", r.revision.namespace, r.revision.name),
            sc.class.clone(),
            format!("{} {}", sc.observed, sc.metric),
            n(steps.map(|s| s.reactive)),
            forecast,
            steps
                .and_then(|s| s.window.clone())
                .unwrap_or_else(|| "-".into()),
            bounds,
            n(steps.map(|s| s.clamped)),
            format!("{} ({})", sc.desired, sc.reason),
            reserved,
        ]);
    }
    if t.is_empty() {
        String::new()
    } else {
        t.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::{ForecastView, ScalingView, StepsView};
    use crate::up::InstanceView;
    use crate::up::controller::RevisionRow;

    fn instance(name: &str, ready: bool, reserved: bool) -> InstanceView {
        InstanceView {
            name: name.into(),
            addr: "127.0.0.1:1".into(),
            state: if ready { "ready" } else { "starting" }.into(),
            ready,
            restarts: 0,
            last_exit: String::new(),
            reserved,
            pid: None,
            nice: None,
        }
    }

    fn revision(instances: Vec<InstanceView>, scaling: ScalingView) -> RevisionView {
        let row: RevisionRow = serde_json::from_value(serde_json::json!({
            "namespace": "default", "name": "hello-00001", "configuration": "hello",
            "ready": "True", "reason": "", "message": "", "desired": 1, "conditions": []
        }))
        .expect("a revision row");
        RevisionView {
            revision: row,
            instances,
            scaling: Some(scaling),
        }
    }

    #[test]
    fn reserved_and_standard_instances_are_told_apart() {
        let r = revision(
            vec![instance("a-0", true, false), instance("a-1", true, true)],
            ScalingView {
                reserved: 1,
                reserved_serving: true,
                ..ScalingView::default()
            },
        );
        assert_eq!(instances_cell(&r, 1), "1/1 (want 1) + reserved 1/1 serving");
        let r = revision(vec![instance("a-0", false, false)], ScalingView::default());
        assert_eq!(instances_cell(&r, 2), "0/1 (want 2)");
    }

    #[test]
    fn every_step_is_shown() {
        let r = revision(
            vec![],
            ScalingView {
                desired: 5,
                reason: "active".into(),
                class: "kpa".into(),
                metric: "concurrency".into(),
                observed: 3.5,
                reserved: 1,
                reserve_type: Some("ecs".into()),
                steps: Some(StepsView {
                    reactive: 1,
                    forecast: Some(4),
                    raised: 4,
                    window: Some("#0 * 7-9 * * * (UTC)".into()),
                    min: 5,
                    max: 0,
                    clamped: 5,
                }),
                forecast: Some(ForecastView {
                    value: 27.5,
                    seasonal: 25.0,
                    margin: 2.5,
                    actual: 3.5,
                    lookahead_s: 32.0,
                    history_minutes: 2880,
                }),
                ..ScalingView::default()
            },
        );
        let view = ServingView {
            revisions: vec![r],
            ..ServingView::default()
        };
        let text = table(&view);
        for want in [
            "default/hello-00001",
            "3.5 concurrency",
            "4 (demand 27.5 = 25 + margin 2.5; actual 3.5; ahead 32s)",
            "#0 * 7-9 * * * (UTC)",
            "5..∞",
            "5 (active)",
            "1 (ecs)",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }
}
