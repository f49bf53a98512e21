//! `sluice up` test helpers: the revision app (`tests/apps/hello.py`), Knative Service YAML
//! running it, and waits on `sluice status`.

use std::net::SocketAddr;

use anyhow::{anyhow, ensure};
use sluice::up::ServingView;

use super::gateway::{Gateway, SETTLE};
use super::{get, wait_for};

/// The revision app.
pub fn app() -> String {
    format!("{}/tests/apps/hello.py", env!("CARGO_MANIFEST_DIR"))
}

/// A Knative Service running the test app with `TARGET=target`; `rest` is appended under
/// `spec:` (a `traffic:` block, indented by two spaces) and `labels` under `metadata:`.
pub fn service(name: &str, target: &str, env: &str, rest: &str) -> String {
    format!(
        r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    spec:
      containers:
        - command: ["python3", "{app}"]
          env:
            - {{name: TARGET, value: "{target}"}}
{env}          readinessProbe:
            httpGet: {{path: /healthz}}
{rest}"#,
        app = app()
    )
}

pub fn host(name: &str) -> String {
    format!("{name}.default.example.com")
}

pub async fn serving(gw: &Gateway) -> anyhow::Result<ServingView> {
    gw.status()
        .await?
        .serving
        .ok_or_else(|| anyhow!("/status has no serving section"))
}

/// Waits until the Service is Ready=True with `latest` as its latest ready revision.
pub async fn wait_service(gw: &Gateway, name: &str, latest: &str) {
    wait_for(
        &format!("Service {name} Ready at {latest}"),
        SETTLE,
        || async {
            let s = serving(gw).await?;
            let svc = s
                .services
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| anyhow!("not listed: {s:?}"))?;
            ensure!(
                svc.ready == "True" && svc.latest_ready == latest,
                "service is {svc:?}; routes {:?}",
                s.routes
            );
            anyhow::Ok(())
        },
    )
    .await;
}

/// Waits until the Route's status traffic is `want` (revision, percent) and it is Ready.
pub async fn wait_traffic(gw: &Gateway, name: &str, want: &[(&str, i64)]) {
    wait_for(
        &format!("Route {name} Ready with traffic {want:?}"),
        SETTLE,
        || async {
            let s = serving(gw).await?;
            let r = s
                .routes
                .iter()
                .find(|r| r.name == name)
                .ok_or_else(|| anyhow!("not listed"))?;
            let got: Vec<(&str, i64)> = r
                .traffic
                .iter()
                .map(|t| (t.revision.as_str(), t.percent))
                .collect();
            ensure!(r.ready == "True" && got == want, "route is {r:?}");
            anyhow::Ok(())
        },
    )
    .await;
}

/// `n` answers in a row for `host` on `addr` from `revision`.
pub async fn wait_revision(addr: SocketAddr, host: &str, headers: &[(&str, &str)], revision: &str) {
    wait_for(
        &format!("5 answers in a row from {revision} for {host}"),
        SETTLE,
        || async {
            for _ in 0..5 {
                let r = get(addr, host, "/", headers).await?;
                ensure!(r.status == 200, "status {}: {}", r.status, r.text());
                ensure!(
                    r.header("x-revision") == Some(revision),
                    "answered by {:?}: {}",
                    r.header("x-revision"),
                    r.text()
                );
            }
            anyhow::Ok(())
        },
    )
    .await;
}
