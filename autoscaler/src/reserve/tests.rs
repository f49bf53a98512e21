//! The reserved-instance annotations and the step from idle to reserved and back.

use super::*;

fn anns(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> (Option<Reserve>, Vec<String>) {
    let mut errors = Vec::new();
    let r = Reserve::parse(&anns(pairs), &mut errors);
    (r, errors.iter().map(ToString::to_string).collect())
}

#[test]
fn enable_with_defaults() {
    let (r, errors) = parse(&[(RESERVE_INSTANCE, "enable")]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        r,
        Some(Reserve {
            replicas: 1,
            instance_type: None,
            args: None,
            cpu_millis: None,
            memory_bytes: None,
        })
    );
    assert_eq!(parse(&[]).0, None);
    assert_eq!(parse(&[(RESERVE_INSTANCE, "disable")]).0, None);
}

#[test]
fn every_setting_read() {
    let (r, errors) = parse(&[
        (RESERVE_INSTANCE, "enable"),
        (RESERVE_INSTANCE_REPLICAS, "2"),
        (RESERVE_INSTANCE_TYPE, "ecs"),
        (RESERVE_INSTANCE_ARGS, r#"["--heap", "64m"]"#),
        (RESERVE_INSTANCE_CPU, "250m"),
        (RESERVE_INSTANCE_MEMORY, "128Mi"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let r = r.unwrap();
    assert_eq!(r.replicas, 2);
    assert_eq!(r.instance_type.as_deref(), Some("ecs"));
    assert_eq!(r.args, Some(vec!["--heap".to_owned(), "64m".to_owned()]));
    assert_eq!((r.cpu_millis, r.memory_bytes), (Some(250), Some(128 << 20)));
}

#[test]
fn invalid_values_are_reported_and_treated_as_absent() {
    let (r, errors) = parse(&[
        (RESERVE_INSTANCE, "enable"),
        (RESERVE_INSTANCE_REPLICAS, "0"),
        (RESERVE_INSTANCE_ARGS, "--heap 64m"),
        (RESERVE_INSTANCE_CPU, "-1"),
        (RESERVE_INSTANCE_MEMORY, "lots"),
    ]);
    let r = r.expect("still enabled");
    assert_eq!(r.replicas, 1, "the default");
    assert_eq!((r.args, r.cpu_millis, r.memory_bytes), (None, None, None));
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].contains("\"0\" is not a whole number from 1 to 100"));
    assert!(errors[0].ends_with(RESERVE_INSTANCE_REPLICAS));
    assert!(errors[1].contains("expected a JSON list of strings"));
    assert!(errors[1].ends_with(RESERVE_INSTANCE_ARGS));
    assert!(errors[2].ends_with(RESERVE_INSTANCE_CPU));
    assert!(errors[3].ends_with(RESERVE_INSTANCE_MEMORY));
    let (r, errors) = parse(&[(RESERVE_INSTANCE, "yes")]);
    assert_eq!(r, None);
    assert_eq!(
        errors,
        ["\"yes\" is neither \"enable\" nor \"disable\": knative.aliyun.com/reserve-instance"]
    );
}

fn run(
    standard_requested: u32,
    standard_ready: u32,
    reserved_running: u32,
    reserved_ready: u32,
) -> Running {
    Running {
        standard_requested,
        standard_ready,
        reserved_running,
        reserved_ready,
    }
}

#[test]
fn without_a_floor_nothing_changes() {
    let v = reserve_step(0, 0, run(1, 1, 0, 0));
    assert_eq!((v.standard, v.reserved, v.serving), (0, 0, false));
    let v = reserve_step(0, 3, run(1, 1, 0, 0));
    assert_eq!((v.standard, v.reserved), (3, 0));
}

#[test]
fn idle_to_reserved_is_make_before_break() {
    // The autoscaler lets the last standard instance go: a reserved one starts first.
    let v = reserve_step(1, 0, run(1, 1, 0, 0));
    assert_eq!((v.standard, v.reserved, v.serving), (1, 1, false));
    let v = reserve_step(1, 0, run(1, 1, 1, 0));
    assert_eq!(
        (v.standard, v.reserved, v.serving),
        (1, 1, false),
        "not ready yet"
    );
    // Ready: the standard instance goes, the reserved one serves.
    let v = reserve_step(1, 0, run(1, 1, 1, 1));
    assert_eq!((v.standard, v.reserved, v.serving), (0, 1, true));
    // At rest.
    let v = reserve_step(2, 0, run(0, 0, 2, 2));
    assert_eq!((v.standard, v.reserved, v.serving), (0, 2, true));
}

#[test]
fn waking_keeps_the_reserved_instance_serving_until_a_standard_one_is_ready() {
    // The first request: the autoscaler wants a standard instance.
    let v = reserve_step(1, 1, run(0, 0, 1, 1));
    assert_eq!((v.standard, v.reserved, v.serving), (1, 1, true));
    // Starting (2 s): still the reserved one.
    let v = reserve_step(1, 2, run(1, 0, 1, 1));
    assert_eq!((v.standard, v.reserved, v.serving), (2, 1, true));
    // A standard instance is ready: hand over.
    let v = reserve_step(1, 2, run(2, 1, 1, 1));
    assert_eq!((v.standard, v.reserved, v.serving), (2, 0, false));
    // Busy with standard instances: no reserved one is started.
    let v = reserve_step(1, 2, run(2, 0, 0, 0));
    assert_eq!((v.standard, v.reserved, v.serving), (2, 0, false));
}
