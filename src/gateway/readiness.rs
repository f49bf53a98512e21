//! Readiness is proven, not assumed: a KIngress is Ready once every connected
//! gateway Envoy ACKed its route configuration at the served version and a Knative
//! probe through Envoy answered its hash.
//!
//! Only the gateway's own Envoys count: streams whose node id is `--node-id` (each stream on
//! its own, so with several replicas every one of them must have ACKed). Any other client of
//! the xDS port — `grpcurl`, a debug tool, a stranger — can neither hold a KIngress back nor
//! change the reason shown for it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sluice_serving::ingress::{CATCH_ALL_HOST, CATCH_ALL_PROBE_HOST, HttpOption, IngressKey};
use sluice_xds::Nodes;
use sluice_xds::resource::ROUTE;
use tokio::sync::{Notify, watch};

use super::Shared;
use super::probe::Prober;

/// What is proven, and why the rest is not.
#[derive(Default)]
pub(crate) struct Readiness {
    /// KIngress → the hash proven served (ACK + probe).
    pub(crate) proven: BTreeMap<IngressKey, String>,
    /// KIngress → why it is not proven yet.
    pub(crate) waiting: BTreeMap<IngressKey, String>,
    /// KIngresses served at a hash that may not be proven yet: the only ones a round looks
    /// at (at 100k KIngresses a look at every one would hold the lock for milliseconds).
    pub(crate) unproven: BTreeSet<IngressKey>,
    /// `sluice_gateway_kingresses{state}`: KIngresses ready, waiting and failed.
    pub(crate) gauge: Family<Vec<(String, String)>, Gauge>,
    /// With `--gateway-pods`: each gateway pod and the last probe problem through it (`None`:
    /// every probe of the last round answered).
    pub(crate) pods: BTreeMap<std::net::IpAddr, Option<String>>,
}

impl Shared {
    /// Sets `sluice_gateway_kingresses` from the current state, at a cost proportional to the
    /// KIngresses failing or not proven yet (not to all of them).
    pub(crate) fn count_kingresses(&self) {
        let failed = self.state.failing().count();
        let waiting = self
            .readiness
            .unproven
            .iter()
            .filter(|k| !self.state.is_failing(k))
            .count();
        let ready = self
            .state
            .ingresses()
            .len()
            .saturating_sub(failed + waiting);
        for (state, n) in [("ready", ready), ("waiting", waiting), ("failed", failed)] {
            self.readiness
                .gauge
                .get_or_create(&vec![("state".to_string(), state.to_string())])
                .set(n as i64);
        }
    }
}

/// One KIngress to prove: key, hash, and ((listener, PROXY header needed), host) probe targets.
type ProbeTask = (IngressKey, String, Vec<((SocketAddr, bool), String)>);

/// Where to probe a listener given by its flag: on `listen-ip-addresses`' first address when
/// set (a wildcard one on loopback).
fn probe_addr(flag: SocketAddr, k: &sluice_serving::kourier::KourierConfig) -> SocketAddr {
    match k.listen_ips.as_deref() {
        Some([first, ..]) => SocketAddr::new(*first, flag.port()),
        _ => flag,
    }
}

/// Proves readiness: for every KIngress whose served hash is not proven yet,
/// waits for every connected gateway Envoy (node id `node_id`) to ACK its route
/// configuration at the served version, then probes it through Envoy.
pub(crate) async fn readiness_loop(
    shared: Arc<Mutex<Shared>>,
    nodes: Nodes,
    node_id: String,
    gateway_pods: Option<(String, String)>,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let prober = Prober::new();
    let mut acks = nodes.ack_changes();
    loop {
        // Work out what to probe without holding the lock across awaits. One look at the
        // nodes per round, without copying their ACK maps; only a KIngress whose route
        // configurations every Envoy ACKed gets a probe task built.
        let looking;
        let todo: Vec<ProbeTask> = {
            let mut guard = shared.lock().unwrap_or_else(|e| e.into_inner());
            // Time the look itself, not the wait for the lock.
            looking = Instant::now();
            let Shared {
                state, readiness, ..
            } = &mut *guard;
            // Proven, deleted or not served (a later change brings it back): nothing to do.
            readiness.unproven.retain(|k| {
                state.ingresses().get(k).is_some_and(|st| {
                    st.served_hash.is_some() && readiness.proven.get(k) != st.served_hash.as_ref()
                })
            });
            let config = state.config();
            let kourier = &config.kourier;
            let proxy = kourier.proxy_protocol;
            // Probed through every gateway pod (`--gateway-pods`), else through the local
            // listeners.
            let pods: Vec<(SocketAddr, SocketAddr)> = match &gateway_pods {
                Some(svc) => super::ha::gateway_pods(state, svc)
                    .into_iter()
                    .map(|ip| {
                        (
                            SocketAddr::new(ip, config.internal_http.port()),
                            SocketAddr::new(ip, config.external_http.port()),
                        )
                    })
                    .collect(),
                None => vec![(
                    probe_addr(config.internal_http, kourier),
                    probe_addr(config.external_http, kourier),
                )],
            };
            let Readiness {
                unproven, waiting, ..
            } = readiness;
            nodes.inspect(|all| {
                let states: Vec<_> = all.into_iter().filter(|n| n.id() == node_id).collect();
                let connected = !states.is_empty() || gateway_pods.is_some();
                // Say why when Envoy rejected something: the NACK is the reason.
                let nack = states.iter().find_map(|st| {
                    st.types.iter().find_map(|(t, ts)| {
                        ts.last_nack.as_ref().map(|k| {
                            format!(
                                "Envoy {} rejected {} version {}: {}",
                                st.node.id,
                                sluice_xds::resource::short_name(t),
                                k.version,
                                k.error
                            )
                        })
                    })
                });
                let mut todo = Vec::new();
                for k in unproven.iter() {
                    let Some((st, hash)) = state
                        .ingresses()
                        .get(k)
                        .and_then(|st| Some((st, st.served_hash.as_ref()?)))
                    else {
                        continue;
                    };
                    let why = if !connected {
                        Some(format!(
                            "waiting for an Envoy with node id {node_id:?} to connect"
                        ))
                    } else {
                        // A route configuration of this KIngress that Envoy rejected (and
                        // that is kept apart while the rest applies) is its own reason.
                        let rejected = states.iter().find_map(|st| {
                            let t = st.types.get(ROUTE)?;
                            state.route_versions(k).find_map(|(name, _)| {
                                t.rejected.get(name).map(|e| {
                                    format!(
                                        "Envoy {} rejected route configuration {name}: {e}",
                                        st.node.id
                                    )
                                })
                            })
                        });
                        let all = !states.is_empty()
                            && states.iter().all(|st| {
                                state.route_versions(k).all(|(name, v)| {
                                    st.types
                                        .get(ROUTE)
                                        .and_then(|t| t.acked.get(name))
                                        .is_some_and(|(av, _)| av == v)
                                })
                            });
                        match rejected {
                            Some(why) => Some(why),
                            // Through every gateway pod, the probes prove it: the Envoys may
                            // be connected to other replicas, whose ACKs this one does not see.
                            None if all || gateway_pods.is_some() => None,
                            None => Some(nack.clone().unwrap_or_else(|| {
                                "waiting for Envoy to ACK its route configuration".into()
                            })),
                        }
                    };
                    if let Some(why) = why {
                        if waiting.get(k) != Some(&why) {
                            waiting.insert(k.clone(), why);
                        }
                        continue;
                    }
                    let redirected = st.ingress.spec.http_option == Some(HttpOption::Redirected);
                    let targets = st
                        .hosts
                        .iter()
                        .flat_map(|(h, local)| {
                            // The catch-all is probed with a host no KIngress can have.
                            let h = if h == CATCH_ALL_HOST {
                                CATCH_ALL_PROBE_HOST.to_string()
                            } else {
                                h.clone()
                            };
                            let mut t = Vec::new();
                            for (internal, external) in &pods {
                                t.push(((*internal, false), h.clone()));
                                if !local && !redirected {
                                    t.push(((*external, proxy), h.clone()));
                                }
                            }
                            t
                        })
                        .collect();
                    todo.push((k.clone(), hash.clone(), targets));
                }
                todo
            })
        };
        // The look holds the node registry, which every ACK needs too.
        let looked = looking.elapsed();
        // Probes run concurrently (bounded): thousands of KIngresses become
        // ready together at start-up.
        let pod_problems: Arc<Mutex<BTreeMap<std::net::IpAddr, String>>> = Arc::default();
        let probed: Vec<_> = futures::stream::iter(todo)
            .map(|(key, hash, targets)| {
                let prober = prober.clone();
                let pod_problems = pod_problems.clone();
                async move {
                    if targets.is_empty() {
                        return (key, hash, Err("no gateway pods available".to_string()));
                    }
                    let mut result = Ok(());
                    for ((addr, proxy), host) in &targets {
                        if let Err(e) = prober.probe_via(*addr, host, &hash, *proxy).await {
                            let e = e.to_string();
                            pod_problems
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(addr.ip(), e.clone());
                            result = Err(e);
                            break;
                        }
                    }
                    (key, hash, result)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let verdicts: Vec<(IngressKey, String, Result<(), String>)> = probed;
        if let Some(svc) = &gateway_pods {
            let problems =
                std::mem::take(&mut *pod_problems.lock().unwrap_or_else(|e| e.into_inner()));
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            let pods = super::ha::gateway_pods(&s.state, svc);
            s.readiness.pods = pods
                .into_iter()
                .map(|ip| (ip, problems.get(&ip).cloned()))
                .collect();
        }
        {
            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
            for (key, hash, verdict) in verdicts {
                match verdict {
                    Ok(()) => {
                        tracing::info!(ingress = %key, hash, "ready: ACKed and probed through Envoy");
                        s.readiness.waiting.remove(&key);
                        s.readiness.proven.insert(key, hash);
                        changed.notify_one();
                    }
                    Err(why) => {
                        s.readiness.waiting.insert(key, why);
                    }
                }
            }
        }
        let pending = {
            let s = shared.lock().unwrap_or_else(|e| e.into_inner());
            s.count_kingresses();
            !s.readiness.waiting.is_empty()
        };
        // Re-check on the next ACK, or soon when a probe is pending (backoff-free
        // but bounded: Envoy applies config in milliseconds).
        let wait = if pending {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        let idle = Instant::now();
        tokio::select! {
            _ = acks.changed() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A look over tens of thousands of KIngresses waiting for their ACKs (a cold start)
        // takes milliseconds, and Envoy ACKs many times a second then: leave the xDS streams
        // at least SPACING times as long as the look took, so readiness cannot starve them.
        // A look over the few KIngresses an edit touches is microseconds: no delay.
        let rest = (looked * SPACING).saturating_sub(idle.elapsed());
        if !rest.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// How much longer than a readiness look the next one waits at least (see the loop).
const SPACING: u32 = 4;
