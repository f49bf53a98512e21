//! Unit tests of the serving controller: files in, gateway objects and runtime decisions out.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use super::*;
use crate::gateway::documents::decode;
use sluice_serving::lookup::{IDLE_TIMEOUT_ANNOTATION, TIMEOUT_ANNOTATION};

const HELLO: &str = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
      - command: ["./hello"]
        env: [{name: TARGET, value: one}]
"#;

fn feed(c: &mut Controller, file: &str, text: &str) {
    let d = decode(Path::new(file), text);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    for (key, object) in d.objects {
        c.object_changed(&key, Some(object), Path::new(file));
    }
}

fn ready(c: &mut Controller, rev: &str, port: u16) {
    c.runtime_changed(
        &Key::new("default", rev),
        RuntimeReport {
            ready: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))],
            readiness: Readiness::Ready,
        },
    );
}

fn ingress_of(out: &Output) -> Option<&Ingress> {
    out.gateway.iter().find_map(|(k, o)| match (k.kind, o) {
        (Kind::Ingress, Some(Object::Ingress(i))) => Some(i.as_ref()),
        _ => None,
    })
}

fn splits(i: &Ingress) -> Vec<(String, i64)> {
    let rule = &i.spec.rules[0];
    rule.http.as_ref().unwrap().paths[0]
        .splits
        .iter()
        .map(|s| (s.service_name.clone(), s.percent))
        .collect()
}

#[test]
fn a_service_runs_its_revision_and_is_served_once_ready() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    let out = c.reconcile();
    assert!(out.state_changed, "the created revision is persisted");
    assert_eq!(out.run.len(), 1);
    let (spec, n) = (&out.run[0].spec, &out.run[0].instances);
    assert_eq!((spec.revision.as_str(), *n), ("hello-00001", 1));
    assert_eq!(spec.command, ["./hello"]);
    assert_eq!(spec.service, "hello");
    assert_eq!(spec.working_dir, None);
    assert!(ingress_of(&out).is_none(), "not ready: nothing to serve");
    let svc = out
        .gateway
        .iter()
        .find(|(k, _)| k.kind == Kind::Service)
        .expect("revision Service");
    assert_eq!(svc.0.name, "hello-00001");

    ready(&mut c, "hello-00001", 4000);
    let out = c.reconcile();
    let ingress = ingress_of(&out).expect("KIngress once ready");
    assert_eq!(splits(ingress), [("hello-00001".to_string(), 100)]);
    assert_eq!(
        ingress.spec.rules.last().unwrap().hosts,
        ["hello.default.example.com"]
    );
    let endpoints = out
        .gateway
        .iter()
        .find_map(|(k, o)| match (k.kind, o) {
            (Kind::Endpoints, Some(Object::Endpoints(e))) => Some(e),
            _ => None,
        })
        .expect("endpoints");
    let subsets = endpoints.subsets.as_ref().unwrap();
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 4000);
    assert_eq!(c.served_urls()[0].1, "http://hello.default.example.com");
}

#[test]
fn a_template_edit_creates_revision_two_and_moves_latest_traffic() {
    let mut c = Controller::new(ServingState::default(), Some("test.dev".into()));
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    feed(&mut c, "d/hello.yaml", &HELLO.replace("one", "two"));
    let out = c.reconcile();
    assert!(
        out.run
            .iter()
            .any(|r| r.spec.revision == "hello-00002" && r.instances == 1)
    );
    assert!(
        ingress_of(&out).is_none(),
        "00002 not ready: 00001 keeps serving"
    );
    ready(&mut c, "hello-00002", 4001);
    let out = c.reconcile();
    let ingress = ingress_of(&out).expect("traffic moves to 00002");
    assert_eq!(splits(ingress), [("hello-00002".to_string(), 100)]);
    // 00001 no longer gets traffic and is not the latest: it is stopped.
    assert!(
        out.run
            .iter()
            .any(|r| r.spec.revision == "hello-00001" && r.instances == 0 && !r.active),
        "{:?}",
        out.run
    );
    assert_eq!(
        c.state().configurations["default/hello"].revisions.len(),
        2,
        "both revisions are kept"
    );
}

#[test]
fn an_invalid_traffic_block_keeps_the_last_good_split_and_is_reported() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    let bad = format!("{HELLO}  traffic:\n  - latestRevision: true\n    percent: 90\n");
    feed(&mut c, "d/hello.yaml", &bad);
    let out = c.reconcile();
    assert!(ingress_of(&out).is_none(), "nothing changes on bad input");
    let problems = c.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, Path::new("d/hello.yaml"));
    assert!(problems[0].message.contains("100"), "{}", problems[0]);
    assert_eq!(problems[0].field.as_deref(), Some("spec.traffic"));
}

#[test]
fn an_unknown_revision_keeps_the_previous_kingress_and_says_why() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    let bad = format!("{HELLO}  traffic:\n  - revisionName: hello-00009\n    percent: 100\n");
    feed(&mut c, "d/hello.yaml", &bad);
    let out = c.reconcile();
    assert!(ingress_of(&out).is_none());
    assert!(c.is_served(&Key::new("default", "hello")));
    let (_, routes, _) = c.view(|_| None);
    assert_eq!(routes[0].ready, "False");
    assert!(routes[0].message.contains("hello-00009"), "{:?}", routes[0]);
}

#[test]
fn deleting_the_file_removes_the_service_its_revisions_and_its_kingress() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    c.object_changed(
        &ObjectKey {
            kind: Kind::KnativeService,
            namespace: "default".into(),
            name: "hello".into(),
        },
        None,
        Path::new("d/hello.yaml"),
    );
    let out = c.reconcile();
    assert_eq!(out.remove, [Key::new("default", "hello-00001")]);
    assert!(
        out.gateway
            .iter()
            .any(|(k, o)| k.kind == Kind::Ingress && o.is_none())
    );
    assert!(c.state().configurations.is_empty());
}

#[test]
fn traffic_to_a_stopped_revision_waits_until_it_is_ready() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    feed(&mut c, "d/hello.yaml", &HELLO.replace("one", "two"));
    c.reconcile();
    ready(&mut c, "hello-00002", 4001);
    c.reconcile();
    // 00001 is stopped now (0 instances); its readiness stays Ready.
    c.runtime_changed(
        &Key::new("default", "hello-00001"),
        RuntimeReport {
            ready: vec![],
            readiness: Readiness::Ready,
        },
    );
    c.reconcile();
    let split = format!(
        "{}  traffic:\n  - revisionName: hello-00001\n    percent: 50\n  - latestRevision: true\n    percent: 50\n",
        HELLO.replace("one", "two")
    );
    feed(&mut c, "d/hello.yaml", &split);
    let out = c.reconcile();
    assert!(ingress_of(&out).is_none(), "held until 00001 answers");
    let (_, routes, _) = c.view(|_| None);
    assert_eq!(routes[0].reason, "RevisionStarting", "{:?}", routes[0]);
    assert!(routes[0].message.contains("hello-00001"), "{:?}", routes[0]);
    assert!(
        out.run
            .iter()
            .any(|r| r.spec.revision == "hello-00001" && r.instances == 1 && r.reachable),
        "00001 is started again"
    );
    ready(&mut c, "hello-00001", 4002);
    let out = c.reconcile();
    let ingress = ingress_of(&out).expect("served once 00001 is ready");
    assert_eq!(
        splits(ingress),
        [
            ("hello-00001".to_string(), 50),
            ("hello-00002".to_string(), 50)
        ]
    );
}

#[test]
fn revisions_survive_a_restart_through_the_state() {
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    feed(&mut c, "d/hello.yaml", &HELLO.replace("one", "two"));
    c.reconcile();
    let saved = ServingState::from_json(&c.state().to_json()).unwrap();
    let mut c = Controller::new(saved, None);
    feed(&mut c, "d/hello.yaml", &HELLO.replace("one", "two"));
    let out = c.reconcile();
    assert!(
        !out.run.iter().any(|r| r.spec.revision == "hello-00003"),
        "the same template makes no new revision"
    );
    assert_eq!(c.revisions().len(), 2);
}

#[test]
fn h2c_revisions_get_an_http2_port_and_their_timeouts() {
    let text = r#"
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: grpc}
spec:
  template:
    spec:
      timeoutSeconds: 42
      idleTimeoutSeconds: 7
      containers:
      - command: ["./grpc"]
        ports: [{name: h2c, containerPort: 9000}]
"#;
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/grpc.yaml", text);
    let out = c.reconcile();
    let svc = out
        .gateway
        .iter()
        .find_map(|(k, o)| match (k.kind, o) {
            (Kind::Service, Some(Object::Service(s))) => Some(s),
            _ => None,
        })
        .unwrap();
    let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(port.name.as_deref(), Some("http2"));
    assert_eq!(port.port, 80);
    assert_eq!(
        svc.metadata.annotations.as_ref().unwrap()[TIMEOUT_ANNOTATION],
        "42"
    );
    assert_eq!(
        svc.metadata.annotations.as_ref().unwrap()[IDLE_TIMEOUT_ANNOTATION],
        "7"
    );
}

#[test]
fn a_standalone_configuration_and_route_are_served_under_the_configured_domain() {
    let text = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: config-domain, namespace: knative-serving}
data: {example.org: ""}
---
apiVersion: serving.knative.dev/v1
kind: Configuration
metadata: {name: backend, namespace: shop}
spec:
  template:
    spec:
      containers:
      - command: ["./backend"]
---
apiVersion: serving.knative.dev/v1
kind: Route
metadata: {name: front, namespace: shop}
spec:
  traffic:
  - configurationName: backend
    percent: 100
"#;
    let mut c = Controller::new(ServingState::default(), None);
    feed(&mut c, "d/shop.yaml", text);
    let out = c.reconcile();
    let (spec, n) = (&out.run[0].spec, &out.run[0].instances);
    assert_eq!((spec.revision.as_str(), *n), ("backend-00001", 1));
    assert_eq!(spec.service, "", "no Knative Service owns it");
    c.runtime_changed(
        &Key::new("shop", "backend-00001"),
        RuntimeReport {
            ready: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 4000))],
            readiness: Readiness::Ready,
        },
    );
    let out = c.reconcile();
    let ingress = ingress_of(&out).expect("the Route's KIngress");
    assert_eq!(ingress.metadata.name.as_deref(), Some("front"));
    assert!(
        ingress
            .spec
            .rules
            .iter()
            .any(|r| r.hosts == ["front.shop.example.org"]),
        "{:?}",
        ingress.spec.rules
    );
    // --domain wins over config-domain.
    let mut c = Controller::new(ServingState::default(), Some("local.test".into()));
    feed(&mut c, "d/shop.yaml", text);
    c.reconcile();
    c.runtime_changed(
        &Key::new("shop", "backend-00001"),
        RuntimeReport {
            ready: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 4000))],
            readiness: Readiness::Ready,
        },
    );
    c.reconcile();
    assert_eq!(c.served_urls()[0].1, "http://front.shop.local.test");
}

#[test]
fn min_scale_is_read_as_the_autoscaler_reads_it() {
    let mut r = Revision::default();
    assert_eq!(objects::min_scale(&r), 0);
    for key in [
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/minScale",
    ] {
        r.metadata.annotations = Some(BTreeMap::from([(key.to_string(), "2".to_string())]));
        assert_eq!(objects::min_scale(&r), 2, "{key}");
    }
}

#[test]
fn with_the_activator_endpoints_point_at_it_until_the_autoscaler_says_direct() {
    let activator = SocketAddr::from((Ipv4Addr::LOCALHOST, 8012));
    let mut c = Controller::new(ServingState::default(), None).with_activator(activator);
    let yaml = HELLO.replace(
        "      containers:\n",
        "      containerConcurrency: 2\n      containers:\n",
    );
    feed(&mut c, "d/hello.yaml", &yaml);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    let out = c.reconcile();
    let key = Key::new("default", "hello-00001");
    assert!(c.via_activator(&key));
    let endpoint_ports = |out: &Output| {
        out.gateway.iter().find_map(|(k, o)| match (k.kind, o) {
            (Kind::Endpoints, Some(Object::Endpoints(e))) => Some(
                e.subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.ports.iter().flatten().map(|p| p.port))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
    };
    let concurrency_annotation = |out: &Output| {
        out.gateway.iter().find_map(|(k, o)| match (k.kind, o) {
            (Kind::Service, Some(Object::Service(s))) => Some(
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(sluice_serving::lookup::CONCURRENCY_ANNOTATION))
                    .cloned(),
            ),
            _ => None,
        })
    };
    assert!(ingress_of(&out).is_some(), "served once ready");
    // The instance became ready, but Envoy keeps sending to the activator.
    assert_eq!(
        endpoint_ports(&out),
        None,
        "the Endpoints (the activator) did not change"
    );

    c.set_direct(&key, true);
    let out = c.reconcile();
    assert_eq!(
        endpoint_ports(&out),
        Some(vec![4000]),
        "straight to the instance"
    );
    assert_eq!(
        concurrency_annotation(&out),
        Some(Some("2".to_string())),
        "Envoy keeps containerConcurrency on the direct path"
    );

    c.set_direct(&key, false);
    let out = c.reconcile();
    assert_eq!(
        endpoint_ports(&out),
        Some(vec![8012]),
        "back to the activator"
    );
    assert_eq!(
        concurrency_annotation(&out),
        Some(None),
        "the activator keeps the limit: Envoy must not cap it at one instance's worth"
    );
}

#[test]
fn a_revision_at_zero_behind_the_activator_can_take_traffic_at_once() {
    let activator = SocketAddr::from((Ipv4Addr::LOCALHOST, 8012));
    let mut c = Controller::new(ServingState::default(), None).with_activator(activator);
    feed(&mut c, "d/hello.yaml", HELLO);
    c.reconcile();
    ready(&mut c, "hello-00001", 4000);
    c.reconcile();
    feed(&mut c, "d/hello.yaml", &HELLO.replace("one", "two"));
    c.reconcile();
    ready(&mut c, "hello-00002", 4001);
    c.reconcile();
    // 00001 scaled to zero: Ready, no instance.
    c.runtime_changed(
        &Key::new("default", "hello-00001"),
        RuntimeReport {
            ready: vec![],
            readiness: Readiness::Ready,
        },
    );
    c.reconcile();
    let split = format!(
        "{}  traffic:\n  - revisionName: hello-00001\n    percent: 50\n  - latestRevision: true\n    percent: 50\n",
        HELLO.replace("one", "two")
    );
    feed(&mut c, "d/hello.yaml", &split);
    let out = c.reconcile();
    let ingress = ingress_of(&out).expect("not held: the activator wakes 00001");
    assert_eq!(splits(ingress).len(), 2);
}
