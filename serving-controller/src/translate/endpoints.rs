//! The ready addresses behind a Service port, from its EndpointSlices (which win) or its
//! Endpoints object, as kube-proxy resolves them.
//!
//! The endpoint port is the port of the slice (or subset) whose name equals the Service port's
//! name (unnamed = `""`); a slice without a port list falls back to the Service port's numeric
//! `targetPort` (or its `port` when `targetPort` is unset). A slice or subset that lists ports
//! but not this one serves other ports and is skipped. Endpoints whose `ready` condition is
//! `false` are left out (unset counts as ready, as the API documents); Endpoints' subsets
//! contribute `addresses` only, never `notReadyAddresses`. FQDN slices and addresses that are
//! not IP literals are skipped: EDS needs IPs. The result is sorted and deduplicated, so the
//! same state always yields the same assignment.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::lookup::Lookup;

/// One upstream address.
pub type Endpoint = (IpAddr, u32);

/// The ready endpoints of a Service port.
pub fn ready_endpoints(
    lookup: &impl Lookup,
    namespace: &str,
    service: &str,
    port: &ServicePort,
) -> Vec<Endpoint> {
    let want = port.name.as_deref().unwrap_or("");
    let fallback = target_port(port);
    let mut out = Vec::new();
    let slices = lookup.endpoint_slices(namespace, service);
    if !slices.is_empty() {
        for slice in slices {
            if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
                continue;
            }
            let number = match slice.ports.as_deref() {
                None | Some([]) => fallback,
                Some(ports) => ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == want)
                    .and_then(|p| p.port),
            };
            let Some(number) = number.and_then(|n| u32::try_from(n).ok()) else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                out.extend(
                    ep.addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .map(|ip| (ip, number)),
                );
            }
        }
    } else if let Some(endpoints) = lookup.endpoints(namespace, service) {
        for subset in endpoints.subsets.iter().flatten() {
            let number = match subset.ports.as_deref() {
                None | Some([]) => fallback,
                Some(ports) => ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == want)
                    .map(|p| p.port),
            };
            let Some(number) = number.and_then(|n| u32::try_from(n).ok()) else {
                continue;
            };
            out.extend(
                subset
                    .addresses
                    .iter()
                    .flatten()
                    .filter_map(|a| a.ip.parse::<IpAddr>().ok())
                    .map(|ip| (ip, number)),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The numeric target port of a Service port, if it has one.
fn target_port(port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(_)) => None,
    }
}
