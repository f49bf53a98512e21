//! KIngress → Envoy, as two pure functions.
//!
//! [`translate_ingress`] turns one KIngress (plus the Services, endpoints and Secrets it names,
//! through a [`Lookup`]) into its own pieces, [`IngressResources`]: its route configuration(s),
//! the scopes sending its hosts there, the clusters and EDS assignments of its splits, the SDS
//! secrets of its TLS blocks and the HTTPS filter chains that use them, plus its probe hash.
//! Those pieces depend on nothing else, so a controller keeps one per KIngress and
//! re-translates only the KIngress an event touches.
//!
//! [`assemble`] merges any number of them with the gateway's listeners into the resource set
//! served over xDS. See [`scopes`] for the route layout (scoped routes, one RouteConfiguration
//! per KIngress) and why.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, ScopedRouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use sluice_xds::Resource;

use crate::hash::probe_hash;
use crate::ingress::{HttpOption, Ingress, IngressKey, Visibility, is_ours, validate};
use crate::lookup::Lookup;

mod assemble;
mod checks;
pub mod clusters;
pub mod endpoints;
mod error;
pub mod gateway;
pub mod hcm;
pub mod internal_tls;
pub mod listeners;
pub mod names;
pub mod routes;
pub mod scopes;
pub mod tls;

pub use assemble::assemble;
pub use checks::shown;
pub use error::TranslateError;
pub use gateway::{ConfigProblem, GatewayResources, gateway_resources};
pub use listeners::{GatewayConfig, TlsChain};
pub use scopes::RouteTable;

/// One KIngress's share of the gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IngressResources {
    /// The KIngress.
    pub ingress: IngressKey,
    /// Its probe hash (`K-Network-Hash`), answered by its probe routes.
    pub hash: String,
    /// `ns/name` (every rule's virtual host), and `ns/name/redirect` when plain HTTP on the
    /// external listener is redirected.
    pub route_configurations: Vec<RouteConfiguration>,
    /// The scopes of its hosts, by name.
    pub scopes: Vec<ScopedRouteConfiguration>,
    /// The clusters of its splits, by name.
    pub clusters: Vec<Cluster>,
    /// The EDS assignments of its EDS clusters, by name.
    pub load_assignments: Vec<ClusterLoadAssignment>,
    /// The SDS secrets of its TLS blocks, by name.
    pub secrets: Vec<Secret>,
    /// Its HTTPS filter chains, in `spec.tls` order.
    pub tls: Vec<TlsChain>,
}

impl IngressResources {
    /// Everything but listeners, as xDS resources.
    pub fn resources(&self) -> Vec<Resource> {
        let mut out = Vec::with_capacity(
            self.route_configurations.len()
                + self.scopes.len()
                + self.clusters.len()
                + self.load_assignments.len()
                + self.secrets.len(),
        );
        out.extend(
            self.secrets
                .iter()
                .map(|s| Resource::new(s.name.clone(), s)),
        );
        out.extend(
            self.clusters
                .iter()
                .map(|c| Resource::new(c.name.clone(), c)),
        );
        out.extend(
            self.load_assignments
                .iter()
                .map(|a| Resource::new(a.cluster_name.clone(), a)),
        );
        out.extend(
            self.route_configurations
                .iter()
                .map(|r| Resource::new(r.name.clone(), r)),
        );
        out.extend(self.scopes.iter().map(|s| Resource::new(s.name.clone(), s)));
        out
    }

    /// The hosts this KIngress has a scope for in `table`.
    pub fn hosts(&self, table: RouteTable) -> Vec<&str> {
        let prefix = format!("{}/", table.name());
        self.scopes
            .iter()
            .filter_map(|s| s.name.strip_prefix(&prefix))
            .collect()
    }
}

fn check_host(ingress: &IngressKey, field: String, host: &str) -> Result<(), TranslateError> {
    let reason = if host.is_empty() {
        "empty"
    } else if host.contains('*') {
        "wildcard hosts are not supported; Knative hosts are exact"
    } else if host.contains([':', '/', ' ']) {
        "a host is a DNS name without port or path"
    } else {
        return Ok(());
    };
    Err(TranslateError::UnsupportedHost {
        ingress: ingress.clone(),
        field,
        host: host.to_string(),
        reason,
    })
}

/// Hosts of `hosts` not yet in `taken` (marking them taken): a domain may appear in only one
/// virtual host of a route configuration, and Knative gives it to the first rule.
fn claim<'a>(hosts: &[&'a str], taken: &mut HashSet<String>) -> Vec<&'a str> {
    hosts
        .iter()
        .copied()
        .filter(|h| taken.insert(h.to_string()))
        .collect()
}

/// What of the gateway's configuration shapes each KIngress's translation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// External authorization is on: virtual hosts carry its context, and probe routes and
    /// ACME challenges are exempt.
    pub ext_authz: bool,
    /// The external HTTPS listener has a default certificate (`certs-secret-*`): every
    /// external host is served over HTTPS, not only those with `spec.tls`.
    pub https_everywhere: bool,
    /// Knative's `system-internal-tls` is on: splits are spoken to over TLS
    /// ([`internal_tls`]).
    pub internal_tls: bool,
}

impl TranslateOptions {
    /// The options `config` implies.
    pub fn of(config: &GatewayConfig) -> Self {
        Self {
            ext_authz: config.kourier.ext_authz.is_some(),
            https_everywhere: config.kourier.default_cert.is_some(),
            internal_tls: config.internal_tls,
        }
    }
}

/// The KIngress annotation turning HTTP/2 to the backends off (net-kourier's).
pub const DISABLE_HTTP2_ANNOTATION: &str = "kourier.knative.dev/disable-http2";

/// The path prefix of ACME HTTP-01 challenges, exempt from external authorization.
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Translates one KIngress of Sluice's class with the default options. Validates it as
/// Knative does first.
pub fn translate_ingress(
    ingress: &Ingress,
    lookup: &impl Lookup,
) -> Result<IngressResources, TranslateError> {
    translate_ingress_with(ingress, lookup, &TranslateOptions::default())
}

/// Translates one KIngress of Sluice's class. Validates it as Knative does first.
pub fn translate_ingress_with(
    ingress: &Ingress,
    lookup: &impl Lookup,
    options: &TranslateOptions,
) -> Result<IngressResources, TranslateError> {
    let key = ingress.key();
    if !is_ours(ingress) {
        return Err(TranslateError::OtherClass {
            ingress: key,
            class: ingress.class().map(str::to_string),
        });
    }
    validate(ingress).map_err(|errors| TranslateError::Invalid {
        ingress: key.clone(),
        errors,
    })?;
    checks::check(ingress)?;
    let spec = &ingress.spec;
    let hash = probe_hash(ingress);

    let mut secrets = BTreeMap::new();
    let mut chains = Vec::new();
    for (i, t) in spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{i}].secretName");
        let secret =
            tls::secret_from_k8s(lookup, &key, &t.secret_namespace, &t.secret_name, &field)?;
        let mut server_names: Vec<String> = Vec::new();
        for h in &t.hosts {
            if !server_names.contains(h) {
                server_names.push(h.clone());
            }
        }
        chains.push(TlsChain {
            name: names::filter_chain(&key, i),
            server_names,
            secret: secret.name.clone(),
            visibility: t.visibility(),
        });
        secrets.insert(secret.name.clone(), secret);
    }
    let external_tls = options.https_everywhere
        || chains
            .iter()
            .any(|c| c.visibility == Visibility::ExternalIP);
    let http2_allowed = !ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DISABLE_HTTP2_ANNOTATION))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let labels = ingress.metadata.labels.clone().unwrap_or_default();
    let redirected = spec.http_option == Some(HttpOption::Redirected);
    let rc_name = names::route_configuration(&key);
    let redirect_name = names::redirect_route_configuration(&key);

    let mut clusters = BTreeMap::new();
    let mut assignments = BTreeMap::new();
    let mut vhosts = Vec::new();
    let mut redirect_vhosts = Vec::new();
    let mut taken = HashSet::new();
    let mut redirect_taken = HashSet::new();
    let mut scopes = BTreeMap::new();
    let mut add_scope = |table: RouteTable, host: &str, rc: &str| {
        let s = scopes::scope(table, host, rc);
        scopes.entry(s.name.clone()).or_insert(s);
    };

    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let served = rule.served_hosts();
        for (j, h) in rule.hosts.iter().enumerate() {
            check_host(&key, format!("{at}.hosts[{j}]"), h)?;
        }
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default();

        let mut forwarding = Vec::with_capacity(paths.len());
        for (j, path) in paths.iter().enumerate() {
            let single = path.splits.len() == 1;
            let mut weights = Vec::with_capacity(path.splits.len());
            let mut timeout = Duration::ZERO;
            // The largest of the splits' idle timeouts, or none if any split has none.
            let mut idle_timeout = Some(Duration::ZERO);
            // As Kourier: a rewriteHost path goes back through the gateway, in plain text.
            let internal_tls = options.internal_tls && path.rewrite_host.is_empty();
            for (k, split) in path.splits.iter().enumerate() {
                let field = format!("{at}.http.paths[{j}].splits[{k}]");
                let ca = match internal_tls {
                    true => Some(internal_tls::trusted_ca(lookup, &key, &field)?),
                    false => None,
                };
                let up =
                    clusters::upstream(lookup, &key, split, &field, http2_allowed, ca.as_deref())?;
                // Validated to 0..=100; a lone split without percent gets everything.
                let weight = if single && split.percent == 0 {
                    100
                } else {
                    u32::try_from(split.percent).unwrap_or(0)
                };
                weights.push(routes::cluster_weight(
                    up.name(),
                    weight,
                    &split.append_headers,
                ));
                if let Some(t) =
                    lookup.upstream_timeout(&split.service_namespace, &split.service_name)
                {
                    timeout = timeout.max(t);
                }
                idle_timeout = idle_timeout
                    .zip(
                        lookup.upstream_idle_timeout(&split.service_namespace, &split.service_name),
                    )
                    .map(|(a, b)| a.max(b));
                if let Some(a) = up.assignment {
                    assignments.entry(a.cluster_name.clone()).or_insert(a);
                }
                clusters
                    .entry(up.cluster.name.clone())
                    .or_insert(up.cluster);
            }
            let fwd = routes::Forwarding {
                timeout,
                idle_timeout: idle_timeout.filter(|t| !t.is_zero()),
                rewrite_host: Some(path.rewrite_host.clone()).filter(|h| !h.is_empty()),
                set_headers: path.append_headers.clone(),
            };
            forwarding.push((weights, fwd));
        }

        let order = routes::route_order(paths);
        // Probes (and ACME challenges) never wait on external authorization.
        let exempt = |mut r: Route| {
            if options.ext_authz {
                r.typed_per_filter_config
                    .extend([hcm::ext_authz_disabled()]);
            }
            r
        };
        let mut probes: Vec<Route> = order
            .iter()
            .map(|&j| {
                let p = &paths[j];
                exempt(routes::probe_route(
                    &names::probe_route(&key, i, p.prefix()),
                    routes::path_match(p),
                    &hash,
                ))
            })
            .collect();
        // Knative's prober asks for `/healthz`; a rule whose paths do not cover every path
        // still answers it, with a catch-all probe after the per-path copies.
        let covers_every_path = paths
            .iter()
            .any(|p| p.prefix() == "/" && p.headers.is_empty());
        if !covers_every_path {
            probes.push(exempt(routes::probe_route(
                &names::catch_all_probe_route(&key, i),
                routes::route_match("/", Vec::new()),
                &hash,
            )));
        }
        let not_found = (!covers_every_path).then(|| {
            routes::not_found_route(
                &names::not_found_route(&key, i),
                routes::route_match("/", Vec::new()),
            )
        });
        let vhost_name = names::virtual_host(&key, i);
        let hosts = claim(&served, &mut taken);
        if !hosts.is_empty() {
            let mut all = probes.clone();
            all.extend(order.iter().map(|&j| {
                let p = &paths[j];
                let (weights, fwd) = &forwarding[j];
                let r = routes::weighted_route(
                    &names::route(&key, i, p.prefix()),
                    routes::path_match(p),
                    weights.clone(),
                    fwd,
                );
                if p.prefix().starts_with(ACME_CHALLENGE_PREFIX) {
                    exempt(r)
                } else {
                    r
                }
            }));
            all.extend(not_found.clone());
            let mut vhost = routes::virtual_host(&vhost_name, routes::domains(hosts), all);
            if options.ext_authz {
                let visibility = match rule.visibility() {
                    Visibility::ExternalIP => "ExternalIP",
                    Visibility::ClusterLocal => "ClusterLocal",
                };
                vhost
                    .typed_per_filter_config
                    .extend([hcm::ext_authz_context(visibility, &labels)]);
            }
            vhosts.push(vhost);
        }

        let external = rule.visibility() == Visibility::ExternalIP;
        if external && redirected {
            let hosts = claim(&served, &mut redirect_taken);
            if !hosts.is_empty() {
                let mut all = probes;
                all.extend(order.iter().map(|&j| {
                    let p = &paths[j];
                    routes::redirect_route(
                        &names::route(&key, i, p.prefix()),
                        routes::path_match(p),
                    )
                }));
                all.extend(not_found);
                redirect_vhosts.push(routes::virtual_host(
                    &vhost_name,
                    routes::domains(hosts),
                    all,
                ));
            }
        }

        for host in served {
            add_scope(RouteTable::Internal, host, &rc_name);
            if external {
                let plain = if redirected { &redirect_name } else { &rc_name };
                add_scope(RouteTable::External, host, plain);
                if external_tls {
                    add_scope(RouteTable::ExternalTls, host, &rc_name);
                }
            }
        }
    }

    let mut route_configurations = vec![routes::route_configuration(&rc_name, vhosts)];
    if !redirect_vhosts.is_empty() {
        route_configurations.push(routes::route_configuration(&redirect_name, redirect_vhosts));
    }
    Ok(IngressResources {
        ingress: key,
        hash,
        route_configurations,
        scopes: scopes.into_values().collect(),
        clusters: clusters.into_values().collect(),
        load_assignments: assignments.into_values().collect(),
        secrets: secrets.into_values().collect(),
        tls: chains,
    })
}

/// The virtual hosts of a translation's main route configuration (handy for callers and tests).
pub fn virtual_hosts(resources: &IngressResources) -> &[VirtualHost] {
    resources
        .route_configurations
        .first()
        .map(|rc| rc.virtual_hosts.as_slice())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
