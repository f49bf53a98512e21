//! Several control planes, several gateway Envoys (`--kube`).
//!
//! Every replica watches the cluster, builds the whole configuration and serves any Envoy that
//! connects to it; only the leader (a `coordination.k8s.io` Lease, see
//! [`sluice_serving::kube::lease`]) writes KIngress status and events. Readiness is proven as
//! Kourier proves it: with `--gateway-pods`, a probe through **every** ready gateway pod (its
//! address from the gateway Service's EndpointSlices) must answer a KIngress's hash, whichever
//! replica that pod's Envoy is connected to. A pod that is terminating is not ready in its
//! EndpointSlice and so does not hold Ready back.

use std::net::IpAddr;

use sluice_serving::lookup::Lookup;

use super::state::GatewayState;

/// `NAMESPACE/NAME` of a Service.
pub(crate) fn parse_service(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "{s:?} is not NAMESPACE/NAME (e.g. knative-serving/sluice-internal)"
        )),
    }
}

/// The addresses of the gateway pods ready in the EndpointSlices of Service `ns/name`.
pub(crate) fn gateway_pods(state: &GatewayState, (ns, name): &(String, String)) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = state
        .objects()
        .endpoint_slices(ns, name)
        .iter()
        .filter(|s| s.address_type == "IPv4" || s.address_type == "IPv6")
        .flat_map(|s| s.endpoints.iter().flatten().cloned().collect::<Vec<_>>())
        .filter(|ep| {
            let c = ep.conditions.as_ref();
            c.and_then(|c| c.ready).unwrap_or(true)
                && !c.and_then(|c| c.terminating).unwrap_or(false)
        })
        .flat_map(|ep| ep.addresses)
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(
            parse_service("knative-serving/sluice-internal"),
            Ok(("knative-serving".into(), "sluice-internal".into()))
        );
        assert!(parse_service("sluice-internal").is_err());
        assert!(parse_service("a/b/c").is_err());
        assert!(parse_service("/b").is_err());
    }
}
