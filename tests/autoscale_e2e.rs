//! End-to-end tests of autoscaling beyond the KPA under `sluice up`, with real revision
//! processes (`tests/apps/hello.py`) behind the real Envoy: reserved instances (idle → the
//! reserved instance answers the first request → a standard instance takes over with no
//! failed request → back to the reserved instance), the HPA class scaling on CPU measured from
//! `/proc`, scheduled bounds in force now, and predictive scaling from a persisted history.
//! A short `config-autoscaler` (6 s stable window, 2 s grace) keeps them quick; every wait
//! polls with a deadline.

mod support;

#[path = "autoscale_e2e/envoy_sink.rs"]
mod envoy_sink;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::{anyhow, ensure};
use sluice::up::RevisionView;
use support::gateway::{Gateway, SETTLE};
use support::serving::{host, service, serving, wait_service};
use support::{get, wait_for};
use tokio::sync::Mutex;

/// `config-autoscaler` with the shortest windows upstream allows.
fn autoscaler_config() -> String {
    r#"apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data:
  stable-window: "6s"
  scale-to-zero-grace-period: "2s"
"#
    .to_string()
}

/// Puts annotations (full keys) on the Service's template.
fn with_annotations(yaml: String, annotations: &[(&str, &str)]) -> String {
    let lines: String = annotations
        .iter()
        .map(|(k, v)| format!("        {k}: '{v}'\n"))
        .collect();
    yaml.replace(
        "  template:\n    spec:\n",
        &format!("  template:\n    metadata:\n      annotations:\n{lines}    spec:\n"),
    )
}

/// Puts `text` (indented by 6 spaces: `spec.template.spec` fields) before `containers:`.
fn with_template_spec(yaml: String, text: &str) -> String {
    yaml.replace("      containers:\n", &format!("{text}      containers:\n"))
}

async fn revision(gw: &Gateway, name: &str) -> anyhow::Result<RevisionView> {
    serving(gw)
        .await?
        .revisions
        .into_iter()
        .find(|r| r.revision.name == name)
        .ok_or_else(|| anyhow!("revision {name} not listed"))
}

/// (standard ready, standard total, reserved ready, reserved total) of a Revision.
fn counts(r: &RevisionView) -> (usize, usize, usize, usize) {
    let n = |reserved: bool, ready: bool| {
        r.instances
            .iter()
            .filter(|i| i.reserved == reserved && (!ready || i.ready))
            .count()
    };
    (
        n(false, true),
        n(false, false),
        n(true, true),
        n(true, false),
    )
}

/// Waits until the Revision runs only its reserved instance, ready and serving.
async fn wait_reserved_only(gw: &Gateway, name: &str) -> RevisionView {
    wait_for(
        &format!("{name} idle on its reserved instance"),
        SETTLE,
        || async {
            let r = revision(gw, name).await?;
            let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
            ensure!(
                counts(&r) == (0, 0, 1, 1) && s.reserved_serving && s.reason == "reserved",
                "instances {:?}, scaling {s:?}",
                counts(&r)
            );
            anyhow::Ok(r)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_instance_answers_after_idle_then_hands_over_without_a_failure() {
    // Every instance takes 2 s to start; reserved ones get their own args.
    let yaml = with_annotations(
        service(
            "res",
            "res",
            "            - {name: SLOW_START_MS, value: \"2000\"}\n",
            "",
        ),
        &[
            ("knative.aliyun.com/reserve-instance", "enable"),
            ("knative.aliyun.com/reserve-instance-type", "ecs"),
            (
                "sluice.knative.dev/reserve-instance-args",
                r#"["--reserved"]"#,
            ),
        ],
    );
    let gw = Gateway::start_up(
        "reserved",
        &[
            ("config-autoscaler.yaml", autoscaler_config()),
            ("res.yaml", yaml),
        ],
    )
    .await;
    wait_service(&gw, "res", "res-00001").await;

    // Idle: the standard instance is replaced by the reserved one, which runs niced.
    let idle = wait_reserved_only(&gw, "res-00001").await;
    let reserved = idle
        .instances
        .iter()
        .find(|i| i.reserved)
        .expect("reserved");
    assert_eq!(reserved.nice, Some(10), "lower CPU priority: {reserved:?}");
    assert_eq!(
        idle.scaling
            .as_ref()
            .and_then(|s| s.reserve_type.as_deref()),
        Some("ecs")
    );

    // Traffic: one client, 300 ms requests back to back, recording who answered.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let answers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let client = {
        let (stop, failed, answers, addr) = (
            stop.clone(),
            failed.clone(),
            answers.clone(),
            gw.external_http,
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &host("res"), "/?sleep=300", &[]).await {
                    Ok(r) if r.status == 200 => answers.lock().await.push((
                        r.header("x-reserved").unwrap_or_default().to_string(),
                        r.header("x-args").unwrap_or_default().to_string(),
                    )),
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // A standard instance takes over, and the reserved one is gone.
    wait_for("a standard instance took over", SETTLE, || async {
        let r = revision(&gw, "res-00001").await?;
        let by_standard = answers.lock().await.iter().any(|(res, _)| res.is_empty());
        let (sr, _, _, rt) = counts(&r);
        ensure!(
            by_standard && sr >= 1 && rt == 0,
            "instances {:?}, answers {:?}",
            counts(&r),
            answers.lock().await
        );
        anyhow::Ok(())
    })
    .await;
    // Some more requests on the standard instance, then stop.
    let seen = answers.lock().await.len();
    wait_for("more answers", SETTLE, || async {
        ensure!(answers.lock().await.len() >= seen + 3);
        anyhow::Ok(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    client.await.expect("client");
    let answers = answers.lock().await.clone();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests; answers {answers:?}"
    );
    assert_eq!(
        answers[0],
        ("true".to_string(), "--reserved".to_string()),
        "the first request after idle is the reserved instance's (its own args): {answers:?}"
    );
    let handover = answers
        .iter()
        .position(|(r, _)| r.is_empty())
        .expect("standard");
    assert!(
        answers[handover..].iter().all(|(r, _)| r.is_empty()),
        "after the hand-over only standard instances answer: {answers:?}"
    );

    // Idle again: back to the reserved instance, which answers the next first request.
    wait_reserved_only(&gw, "res-00001").await;
    let r = gw.get(&host("res"), "/").await.expect("request after idle");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-reserved"), Some("true"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_class_scales_on_cpu_from_proc_and_back() {
    let yaml = with_annotations(
        service("cpu", "cpu", "", ""),
        &[
            (
                "autoscaling.knative.dev/class",
                "hpa.autoscaling.knative.dev",
            ),
            ("autoscaling.knative.dev/metric", "cpu"),
            ("autoscaling.knative.dev/target", "20"),
            ("autoscaling.knative.dev/window", "6s"),
            ("autoscaling.knative.dev/max-scale", "3"),
        ],
    );
    let gw = Gateway::start_up(
        "hpa",
        &[
            ("config-autoscaler.yaml", autoscaler_config()),
            ("cpu.yaml", yaml),
        ],
    )
    .await;
    wait_service(&gw, "cpu", "cpu-00001").await;
    // Idle: one instance, never zero (no scale to zero for the HPA class).
    let r = revision(&gw, "cpu-00001").await.expect("listed");
    let s = r.scaling.expect("scaled");
    assert_eq!(
        (s.class.as_str(), s.metric.as_str(), s.reason.as_str()),
        ("hpa", "cpu", "hpa")
    );

    // Two clients spinning the CPU 200 ms per request: far above 20 % of a core.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failed, addr) = (stop.clone(), failed.clone(), gw.external_http);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match get(addr, &host("cpu"), "/?burn=200", &[]).await {
                        Ok(r) if r.status == 200 => {}
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let busy = wait_for("cpu-00001 scaled out on CPU", SETTLE, || async {
        let r = revision(&gw, "cpu-00001").await?;
        let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
        ensure!(
            counts(&r).0 >= 2 && s.observed > 20.0,
            "{:?} {s:?}",
            counts(&r)
        );
        anyhow::Ok(s)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(busy.desired <= 3, "max-scale: {busy:?}");
    // Idle: after the 6 s window, back to one (not zero).
    wait_for("cpu-00001 back to one instance", SETTLE, || async {
        let r = revision(&gw, "cpu-00001").await?;
        let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
        ensure!(
            counts(&r).1 == 1 && s.desired == 1,
            "{:?} {s:?}",
            counts(&r)
        );
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_window_in_force_raises_the_count_and_bad_bounds_are_reported() {
    // Every minute matches: the window is in force now, in the given time zone.
    let windowed = with_annotations(
        service("win", "win", "", ""),
        &[
            (
                "sluice.knative.dev/scale-bounds",
                r#"[{"cron": "0 0 31 2 *", "minScale": 9}, {"cron": "* * * * *", "minScale": 2, "maxScale": 3}]"#,
            ),
            ("sluice.knative.dev/scale-bounds-timezone", "Asia/Tokyo"),
        ],
    );
    let bad = with_annotations(
        service("bad", "bad", "", ""),
        &[(
            "sluice.knative.dev/scale-bounds",
            r#"[{"cron": "* 25 * * *", "minScale": 2}]"#,
        )],
    );
    let gw = Gateway::start_up(
        "window",
        &[
            ("config-autoscaler.yaml", autoscaler_config()),
            ("win.yaml", windowed),
            ("bad.yaml", bad),
        ],
    )
    .await;
    wait_service(&gw, "win", "win-00001").await;
    wait_service(&gw, "bad", "bad-00001").await;
    // Idle, yet two instances: the second window's minScale (the first never matches).
    let steps = wait_for(
        "win-00001 held at the window's minScale",
        SETTLE,
        || async {
            let r = revision(&gw, "win-00001").await?;
            let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
            let steps = s.steps.clone().ok_or_else(|| anyhow!("no steps"))?;
            // The KPA alone would go down (halving per tick) and to zero.
            ensure!(
                counts(&r).0 == 2 && s.desired == 2 && steps.reactive < 2,
                "{:?} {s:?}",
                counts(&r)
            );
            anyhow::Ok(steps)
        },
    )
    .await;
    assert_eq!(steps.window.as_deref(), Some("#1 * * * * * (Asia/Tokyo)"));
    assert_eq!((steps.min, steps.max, steps.clamped), (2, 3, 2));
    // The invalid bounds: reported with object, annotation and reason; the Revision scales as
    // without them (to zero when idle).
    let problems = gw.status().await.expect("status").problems;
    let p = problems
        .iter()
        .find(|p| p.object.as_deref() == Some("Revision default/bad-00001"))
        .unwrap_or_else(|| panic!("no problem for bad-00001: {problems:?}"));
    assert_eq!(
        p.field.as_deref(),
        Some("metadata.annotations.sluice.knative.dev/scale-bounds")
    );
    assert!(
        p.message.contains("hour field: 25 is outside 0-23"),
        "{p:?}"
    );
    assert!(p.file.ends_with("bad.yaml"), "{p:?}");
    wait_for("bad-00001 scaled to zero", SETTLE, || async {
        let r = revision(&gw, "bad-00001").await?;
        let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
        ensure!(
            r.instances.is_empty() && s.reason == "scaled-to-zero",
            "{s:?}"
        );
        anyhow::Ok(())
    })
    .await;
    gw.stop().await;
}

/// A history file for `sluice up`'s state directory: `value` in flight in every minute of the
/// last day and five minutes more.
fn history_file(value: f64) -> String {
    let now_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        / 60;
    let start = now_minute - 1445;
    let values = vec![value.to_string(); 1445].join(",");
    format!(
        r#"{{"version": 1, "metric": "concurrency", "history": {{"start": {start}, "values": [{values}], "open": null}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_from_the_persisted_history_starts_instances_before_traffic() {
    // Yesterday this time 20 requests were in flight; with containerConcurrency 1 that is 29
    // instances, capped at max-scale 3. Today nothing has come yet.
    let state = std::env::temp_dir().join(format!("sluice-e2e-predict-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let history = state.join("autoscaler/default/pred/pred-00001.json");
    std::fs::create_dir_all(history.parent().expect("parent")).expect("state dir");
    std::fs::write(&history, history_file(20.0)).expect("seeding the history");
    let yaml = with_template_spec(
        with_annotations(
            service("pred", "pred", "", ""),
            &[
                ("sluice.knative.dev/predictive", "true"),
                ("autoscaling.knative.dev/max-scale", "3"),
            ],
        ),
        "      containerConcurrency: 1\n",
    );
    let state_arg = state.display().to_string();
    let gw = Gateway::start_up_with(
        "predict",
        &[
            ("config-autoscaler.yaml", autoscaler_config()),
            ("pred.yaml", yaml),
        ],
        &["--state-dir", &state_arg],
    )
    .await;
    wait_service(&gw, "pred", "pred-00001").await;
    let s = wait_for(
        "pred-00001 provisioned from its forecast",
        SETTLE,
        || async {
            let r = revision(&gw, "pred-00001").await?;
            let s = r.scaling.clone().ok_or_else(|| anyhow!("not scaled"))?;
            ensure!(
                counts(&r).0 == 3 && s.desired == 3,
                "{:?} {s:?}",
                counts(&r)
            );
            anyhow::Ok(s)
        },
    )
    .await;
    let f = s.forecast.expect("a forecast is shown");
    assert_eq!(f.value, 20.0, "{f:?}");
    let steps = s.steps.expect("steps");
    assert_eq!((steps.forecast, steps.clamped), (Some(29), 3), "{steps:?}");
    assert!(f.history_minutes >= 1445, "{f:?}");
    // Stopping writes the history back, with today's observations added.
    let before = std::fs::metadata(&history)
        .and_then(|m| m.modified())
        .expect("file");
    gw.stop().await;
    let text = std::fs::read_to_string(&history).expect("history written");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["metric"], "concurrency");
    assert!(
        json["history"]["open"].is_object(),
        "today's minute: {}",
        &text[..200.min(text.len())]
    );
    let after = std::fs::metadata(&history)
        .and_then(|m| m.modified())
        .expect("file");
    assert!(after > before);
    let _ = std::fs::remove_dir_all(&state);
}
