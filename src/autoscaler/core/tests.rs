use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;

fn config() -> Config {
    let data: BTreeMap<String, String> = [
        ("stable-window", "6s"),
        ("scale-to-zero-grace-period", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Config::from_map(&data).expect("valid config-autoscaler")
}

fn revision(name: &str, annotations: serde_json::Value, routed: bool) -> Revision {
    serde_json::from_value(json!({
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
            "labels": {"serving.knative.dev/routingState": if routed { "active" } else { "reserve" }}},
        "spec": {"containers": [{"image": "x"}]}
    }))
    .expect("a Revision")
}

fn deployment(revision: &str, wanted: i32, ready: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{revision}-deployment"), "namespace": "default",
            "labels": {"serving.knative.dev/revision": revision}},
        "spec": {"replicas": wanted, "selector": {}, "template": {}},
        "status": {"readyReplicas": ready}
    }))
    .expect("a Deployment")
}

fn key(name: &str) -> Key {
    Key::new("default", name)
}

/// Ticks `seconds` times, one second apart from second `from`, with `concurrency` for `name`,
/// carrying out each scale (the Deployment's pods are ready at once); every scale asked for.
fn run(
    core: &mut Core,
    start: Instant,
    from: u64,
    seconds: u64,
    name: &str,
    concurrency: f64,
) -> Vec<ScaleTo> {
    let mut all = Vec::new();
    for s in from..from + seconds {
        let now = start + Duration::from_secs(s);
        let wall = Timestamp::from_second(1_800_000_000 + s as i64).expect("time");
        let stats = HashMap::from([(
            key(name),
            Stat {
                concurrency,
                requests: concurrency,
            },
        )]);
        let scales = core.tick(now, wall, &stats).scales;
        for s in &scales {
            core.scaled(&s.revision, s.to);
            let to = i32::try_from(s.to).expect("small");
            core.deployment(&deployment(&s.revision.name, to, to));
        }
        all.extend(scales);
    }
    all
}

#[test]
fn envoys_concurrency_scales_the_deployment_up_and_idle_back_to_one_not_zero() {
    let start = Instant::now();
    let mut core = Core::new(Key::new("knative-serving", "sluice-activator"));
    core.set_config(config());
    core.revision(start, revision("hello-00001", json!({}), true));
    core.deployment(&deployment("hello-00001", 1, 1));
    assert_eq!(core.tracked(), 1);

    // 250 in flight over 100 × 70 % per pod: 4 pods.
    let up = run(&mut core, start, 0, 8, "hello-00001", 250.0);
    assert_eq!(
        up.first(),
        Some(&ScaleTo {
            revision: key("hello-00001"),
            from: 1,
            to: 4
        }),
        "{up:?}"
    );

    // Idle past the stable window and the grace period: back to one, never zero.
    let down = run(&mut core, start, 8, 30, "hello-00001", 0.0);
    assert_eq!(down.last().map(|s| s.to), Some(1), "{down:?}");
    assert!(down.iter().all(|s| s.to >= 1));
    assert_eq!(core.deployments[&key("hello-00001")].wanted, 1);
}

#[test]
fn hpa_class_revisions_and_revisions_without_a_deployment_are_left_alone() {
    let start = Instant::now();
    let mut core = Core::new(Key::new("knative-serving", "sluice-activator"));
    core.set_config(config());
    core.revision(
        start,
        revision(
            "cpu-00001",
            json!({"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"}),
            true,
        ),
    );
    core.deployment(&deployment("cpu-00001", 1, 1));
    core.revision(start, revision("waiting-00001", json!({}), true));
    assert_eq!(core.tracked(), 1, "only the KPA one");
    assert!(run(&mut core, start, 0, 10, "cpu-00001", 500.0).is_empty());
    assert!(run(&mut core, start, 10, 10, "waiting-00001", 500.0).is_empty());
}

#[test]
fn min_and_max_scale_hold_and_bad_annotations_are_problems() {
    let start = Instant::now();
    let mut core = Core::new(Key::new("knative-serving", "sluice-activator"));
    core.set_config(config());
    core.revision(
        start,
        revision(
            "bounded-00001",
            json!({"autoscaling.knative.dev/min-scale": "2",
                "autoscaling.knative.dev/max-scale": "3"}),
            true,
        ),
    );
    core.deployment(&deployment("bounded-00001", 1, 1));
    let up = run(&mut core, start, 0, 8, "bounded-00001", 10_000.0);
    assert_eq!(core.deployments[&key("bounded-00001")].wanted, 3, "{up:?}");
    run(&mut core, start, 8, 30, "bounded-00001", 0.0);
    assert_eq!(core.deployments[&key("bounded-00001")].wanted, 2);

    core.revision(
        start,
        revision(
            "bad-00001",
            json!({"autoscaling.knative.dev/min-scale": "many"}),
            true,
        ),
    );
    assert!(core.problems[&key("bad-00001")].contains("min-scale"));
}
