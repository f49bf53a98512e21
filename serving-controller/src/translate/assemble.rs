//! All KIngress translations + the gateway's listeners → the resources to serve.

use std::collections::HashMap;

use sluice_xds::Resource;

use super::IngressResources;
use super::gateway::gateway_resources;
use super::listeners::GatewayConfig;

/// Merges translations (already cleared of domain conflicts, see
/// [`crate::conflict::resolve_conflicts`]) with the listeners into one resource set, ready for
/// [`sluice_xds::SnapshotCache::set_snapshot`].
///
/// Shared resources (a cluster used by two KIngresses, a Secret shared by several) appear once.
/// Should two translations still claim one name (a scope for the same host, a cluster built
/// differently), the earlier in `ingresses` wins and the clash is logged: Envoy would reject
/// the whole update otherwise. Earlier entries also win contested SNI names.
pub fn assemble(ingresses: &[IngressResources], config: &GatewayConfig) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for ing in ingresses {
        for r in ing.resources() {
            let k = (r.type_url().to_string(), r.name().to_string());
            match index.get(&k) {
                None => {
                    index.insert(k, out.len());
                    out.push(r);
                }
                Some(&i) if out[i].version() != r.version() => tracing::warn!(
                    ingress = %ing.ingress,
                    type_url = %k.0,
                    name = %k.1,
                    "resource already defined differently by an earlier ingress; keeping the first"
                ),
                Some(_) => {}
            }
        }
    }
    let chains = ingresses.iter().flat_map(|i| i.tls.iter());
    // (No Secret to look the default certificates up in: a caller that configures them uses
    // `gateway_resources` with its own lookup, as the gateway does.)
    out.extend(gateway_resources(config, chains, &crate::Objects::new()).resources);
    out
}

#[cfg(test)]
mod tests;
