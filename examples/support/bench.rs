//! Helpers shared by the benchmark examples (`gateway_bench`, `soak`, `up_bench`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

use anyhow::bail;
use sluice::gateway::documents::{Object, decode};
use sluice_serving::{Ingress, probe_hash};

/// A free loopback address (bind, read the port, drop).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Host of benchmark service `i`.
pub fn host(i: usize) -> String {
    format!("svc-{i}.bench.example.com")
}

/// Replaces `path` atomically: a hidden temporary file (which the watcher skips) renamed over
/// it.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Resident memory of process `pid`, in MB (0 when unknown).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): utime and stime are the
            // 12th and 13th, in clock ticks (100 per second on Linux).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// KIngress `bench/svc-{i}`: one host, `a`% to Service `svc-{i}-a`, the rest to `svc-{i}-b`.
pub fn ingress_yaml(i: usize, a: u32) -> String {
    format!(
        r#"apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: svc-{i}
  namespace: bench
  annotations:
    networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev
spec:
  rules:
  - hosts: [{host}]
    visibility: ExternalIP
    http:
      paths:
      - splits:
        - {{serviceName: svc-{i}-a, serviceNamespace: bench, servicePort: 80, percent: {a}}}
        - {{serviceName: svc-{i}-b, serviceNamespace: bench, servicePort: 80, percent: {b}}}
"#,
        host = host(i),
        b = 100 - a
    )
}

/// Services `svc-{i}-a` and `-b` with EndpointSlices at 127.0.0.1:`port_a` / `port_b`.
pub fn backing_yaml(i: usize, port_a: u16, port_b: u16) -> String {
    let mut s = String::new();
    for (side, port) in [("a", port_a), ("b", port_b)] {
        s.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata: {{name: svc-{i}-{side}, namespace: bench}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-{side}-x
  namespace: bench
  labels: {{kubernetes.io/service-name: svc-{i}-{side}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"#
        ));
    }
    s
}

/// The probe hash the gateway serves for a KIngress file.
pub fn expected_hash(yaml: &str) -> anyhow::Result<String> {
    let d = decode(Path::new("x.yaml"), yaml);
    let Some((_, Object::Ingress(i))) = d.objects.into_iter().next() else {
        bail!("fixture did not decode: {:?}", d.problems)
    };
    let mut i: Ingress = *i;
    i.set_defaults();
    Ok(probe_hash(&i))
}

/// `GET http://addr/path`, the body as text.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let resp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The sum of a Prometheus metric's samples (every label set).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
