//! Route configurations, virtual hosts and routes.
//!
//! Knative semantics carried here:
//! - `path` is a prefix (empty = `/`); the longest prefix wins, and a path with header matches
//!   is tried before the same path without ([`route_order`]);
//! - header matches are exact;
//! - `appendHeaders` (path and split level) SET the header, replacing a client-sent value
//!   (`OVERWRITE_IF_EXISTS_OR_ADD`);
//! - no retry policy (a backend's 503 reaches the client), route timeout `0s` (none) unless a
//!   revision timeout is known;
//! - every path has a probe copy placed first that matches `K-Network-Hash: override` and is
//!   answered by Envoy itself with 200 and `K-Network-Hash: <hash>` (DESIGN.md); a rule with
//!   no plain `/` path also gets a catch-all probe, so the prober's `GET /healthz` is always
//!   answered;
//! - virtual host domains are each host and `host:*` (a `Host` header with a port).

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, RedirectAction, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster, header_matcher, redirect_action, route, route_action,
    route_match, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::UInt32Value;
use sluice_xds::builders::duration;

use crate::hash::{HASH_HEADER, HASH_HEADER_OVERRIDE};
use crate::ingress::{CATCH_ALL_HOST, HttpIngressPath};

/// A header set on requests (replacing any value the client sent).
pub fn set_header(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// [`set_header`] for every entry, in name order.
pub fn set_headers(headers: &BTreeMap<String, String>) -> Vec<HeaderValueOption> {
    headers.iter().map(|(k, v)| set_header(k, v)).collect()
}

/// An exact (case-sensitive) header value match.
pub fn exact_header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(value.to_string())),
                ignore_case: false,
            },
        )),
        ..Default::default()
    }
}

/// A prefix match with exact header matches (in the given order).
pub fn route_match(prefix: &str, headers: Vec<HeaderMatcher>) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(prefix.to_string())),
        headers,
        ..Default::default()
    }
}

/// The match of a KIngress path: its prefix and its exact headers (name order).
pub fn path_match(path: &HttpIngressPath) -> RouteMatch {
    route_match(
        path.prefix(),
        path.headers
            .iter()
            .map(|(k, v)| exact_header(k, &v.exact))
            .collect(),
    )
}

/// One weighted backend of a route, with the split's headers to set.
pub fn cluster_weight(
    cluster: &str,
    weight: u32,
    headers: &BTreeMap<String, String>,
) -> ClusterWeight {
    ClusterWeight {
        name: cluster.to_string(),
        weight: Some(UInt32Value { value: weight }),
        request_headers_to_add: set_headers(headers),
        ..Default::default()
    }
}

/// What a forwarding route does besides picking a backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forwarding {
    /// The route timeout; `Duration::ZERO` disables it (Envoy's default would be 15 s).
    pub timeout: Duration,
    /// The route's idle timeout (Knative's `idleTimeoutSeconds`); `None` leaves the
    /// listener's stream idle timeout in force.
    pub idle_timeout: Option<Duration>,
    /// `rewriteHost`: the `Host` sent upstream.
    pub rewrite_host: Option<String>,
    /// Path-level `appendHeaders`.
    pub set_headers: BTreeMap<String, String>,
}

/// A route forwarding to weighted clusters. No retry policy: Envoy does not retry unless told.
pub fn weighted_route(
    name: &str,
    matcher: RouteMatch,
    clusters: Vec<ClusterWeight>,
    forwarding: &Forwarding,
) -> Route {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters,
                ..Default::default()
            },
        )),
        timeout: Some(duration(forwarding.timeout)),
        idle_timeout: forwarding.idle_timeout.map(duration),
        host_rewrite_specifier: forwarding
            .rewrite_host
            .as_ref()
            .map(|h| route_action::HostRewriteSpecifier::HostRewriteLiteral(h.clone())),
        ..Default::default()
    };
    Route {
        name: name.to_string(),
        r#match: Some(matcher),
        action: Some(route::Action::Route(action)),
        request_headers_to_add: set_headers(&forwarding.set_headers),
        ..Default::default()
    }
}

/// The probe copy of a route: the same match plus `K-Network-Hash: override`, answered by
/// Envoy with 200 and `K-Network-Hash: <hash>`.
pub fn probe_route(name: &str, mut matcher: RouteMatch, hash: &str) -> Route {
    matcher
        .headers
        .push(exact_header(HASH_HEADER, HASH_HEADER_OVERRIDE));
    Route {
        name: name.to_string(),
        r#match: Some(matcher),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 200,
            body: None,
            ..Default::default()
        })),
        response_headers_to_add: vec![set_header(HASH_HEADER, hash)],
        ..Default::default()
    }
}

/// A route answering 404 to what `matcher` matches: after a rule's routes when its paths do
/// not cover every path, so a known host's unknown path is "not found" here rather than
/// looked up again as an unknown host (the catch-all, see `hcm::CATCH_ALL_LUA`).
pub fn not_found_route(name: &str, matcher: RouteMatch) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(matcher),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 404,
            body: None,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route answering 301 with the same URL on `https` (`httpOption: Redirected`).
pub fn redirect_route(name: &str, matcher: RouteMatch) -> Route {
    Route {
        name: name.to_string(),
        r#match: Some(matcher),
        action: Some(route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            response_code: redirect_action::RedirectResponseCode::MovedPermanently as i32,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The domains of a list of hosts: each host and `host:*`.
pub fn domains<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    hosts
        .into_iter()
        .flat_map(|h| {
            // The catch-all is reached with `:authority` exactly `*` (see `hcm::CATCH_ALL_LUA`).
            if h == CATCH_ALL_HOST {
                vec![h.to_string()]
            } else {
                vec![h.to_string(), format!("{h}:*")]
            }
        })
        .collect()
}

/// A virtual host.
pub fn virtual_host(name: &str, domains: Vec<String>, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_string(),
        domains,
        routes,
        ..Default::default()
    }
}

/// A route configuration. Clusters are not validated on load (the default for RDS), so a
/// route never blocks on a cluster still warming.
pub fn route_configuration(name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        ..Default::default()
    }
}

/// The order in which a rule's paths become routes: longest prefix first, then more header
/// matches first; otherwise the KIngress order. Returns indices into `paths`.
pub fn route_order(paths: &[HttpIngressPath]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_key(|&i| {
        let p = &paths[i];
        (
            std::cmp::Reverse(p.prefix().len()),
            std::cmp::Reverse(p.headers.len()),
        )
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::HeaderMatch;

    fn path(p: &str, headers: &[(&str, &str)]) -> HttpIngressPath {
        HttpIngressPath {
            path: p.into(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        HeaderMatch {
                            exact: v.to_string(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn longest_prefix_then_headers_first() {
        let cases: Vec<(Vec<HttpIngressPath>, Vec<usize>)> = vec![
            (vec![path("", &[]), path("/foo", &[])], vec![1, 0]),
            (vec![path("/", &[]), path("/", &[("a", "1")])], vec![1, 0]),
            (
                vec![
                    path("/a", &[]),
                    path("/bb", &[]),
                    path("/a", &[("x", "1")]),
                    path("", &[("x", "1"), ("y", "2")]),
                ],
                vec![1, 2, 0, 3],
            ),
            // Equal keys keep the KIngress order.
            (vec![path("/x", &[]), path("/y", &[])], vec![0, 1]),
        ];
        for (paths, want) in cases {
            assert_eq!(route_order(&paths), want);
        }
    }

    #[test]
    fn empty_path_is_slash_and_headers_exact() {
        let m = path_match(&path("", &[("b", "2"), ("a", "1")]));
        assert_eq!(
            m,
            route_match("/", vec![exact_header("a", "1"), exact_header("b", "2")])
        );
    }

    #[test]
    fn probe_adds_the_override_match_and_answers_the_hash() {
        let r = probe_route("p", route_match("/x", vec![exact_header("a", "1")]), "abc");
        let m = r.r#match.unwrap();
        assert_eq!(
            m.headers,
            vec![
                exact_header("a", "1"),
                exact_header("K-Network-Hash", "override")
            ]
        );
        assert_eq!(
            r.response_headers_to_add,
            vec![set_header("K-Network-Hash", "abc")]
        );
        let Some(route::Action::DirectResponse(d)) = r.action else {
            panic!("not a direct response");
        };
        assert_eq!(d.status, 200);
    }

    #[test]
    fn headers_are_set_not_appended() {
        assert_eq!(
            set_header("K", "v"),
            HeaderValueOption {
                header: Some(HeaderValue {
                    key: "K".into(),
                    value: "v".into(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            }
        );
    }

    #[test]
    fn domains_include_any_port() {
        assert_eq!(
            domains(["a.com", "b.com"]),
            vec!["a.com", "a.com:*", "b.com", "b.com:*"]
        );
    }

    #[test]
    fn forwarding_route_has_no_retries_and_zero_timeout() {
        let r = weighted_route(
            "r",
            route_match("/", vec![]),
            vec![cluster_weight("ns/s:80", 100, &BTreeMap::new())],
            &Forwarding::default(),
        );
        let Some(route::Action::Route(a)) = r.action else {
            panic!("not forwarding");
        };
        assert_eq!(a.retry_policy, None);
        assert_eq!(a.timeout, Some(duration(Duration::ZERO)));
        assert_eq!(a.host_rewrite_specifier, None);
    }
}
