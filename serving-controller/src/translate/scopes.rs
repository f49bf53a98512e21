//! The route layout: scoped routes (SRDS), one small RouteConfiguration per KIngress.
//!
//! # Why
//! Envoy rebuilds a whole RouteConfiguration whenever any part of it changes. With one
//! RouteConfiguration holding every virtual host (net-kourier's layout), a split edit among 10k
//! services makes Envoy re-parse all 10k hosts. Here every listener's HTTP connection manager
//! uses *scoped routes*: a per-request key picks a `ScopedRouteConfiguration` (a "scope"), and
//! each scope names a RouteConfiguration fetched over RDS. One KIngress edit therefore rebuilds
//! one small RouteConfiguration (its own vhosts), and adds or removes scopes only when its
//! hosts change. Scopes and route configurations both travel over ADS; with Delta xDS only the
//! changed ones are sent. Sharding hosts over K RouteConfigurations would still rebuild N/K
//! hosts per edit and reshuffle shards as hosts come and go; VHDS needs on-demand lookups.
//!
//! # Keys
//! The scope key is the request's `:authority` with any port stripped (split on `:`, element
//! 0), so `Host: h` and `Host: h:8080` both find `h`'s scope; inside the RouteConfiguration the
//! virtual host lists `h` and `h:*`.
//!
//! Envoy subscribes to scopes as a wildcard: every connection manager on the ADS stream sees
//! every scope, yet the external listener must not serve ClusterLocal hosts and the external
//! HTTP listener redirects where HTTPS serves. So each route table uses its own *key shape*:
//! the key builder repeats the host fragment 1, 2 or 3 times ([`RouteTable::fragments`]).
//! Envoy hashes the fragment sequence, so `[h]`, `[h, h]` and `[h, h, h]` are different keys:
//! a scope is visible to exactly the listeners of its table, and scope keys never clash
//! between tables (Envoy rejects an SRDS update with two scopes of one key).
//!
//! | table | key | listeners | hosts |
//! |---|---|---|---|
//! | `external` | `[h]` | external HTTP | ExternalIP rules (redirect routes when `Redirected`) |
//! | `external-tls` | `[h, h]` | external HTTPS | ExternalIP rules of a KIngress with external TLS |
//! | `internal` | `[h, h, h]` | internal HTTP and HTTPS | every rule |
//!
//! A host with no scope in a table (a ClusterLocal host on the external listener, an unknown
//! host) gets Envoy's 404.

use envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::scoped_route_configuration::{Key, key};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    ScopedRds, ScopedRoutes, scoped_routes,
};
use scoped_routes::scope_key_builder::FragmentBuilder;
use scoped_routes::scope_key_builder::fragment_builder::{
    HeaderValueExtractor, Type as FragmentType, header_value_extractor::ExtractType,
};
use sluice_xds::builders::ads_source;

use super::names;

/// The header the scope key is built from.
pub const AUTHORITY: &str = ":authority";

/// Which route table (set of scopes) a listener consults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteTable {
    /// The external plain-HTTP listener.
    External,
    /// The external HTTPS listener.
    ExternalTls,
    /// The internal HTTP and HTTPS listeners.
    Internal,
}

impl RouteTable {
    /// Every table.
    pub const ALL: [RouteTable; 3] = [Self::External, Self::ExternalTls, Self::Internal];

    /// How many times the host fragment is repeated in this table's keys.
    pub fn fragments(self) -> usize {
        match self {
            Self::External => 1,
            Self::ExternalTls => 2,
            Self::Internal => 3,
        }
    }

    /// Short name, used in scope names and stat prefixes.
    pub fn name(self) -> &'static str {
        match self {
            Self::External => "external",
            Self::ExternalTls => "external-tls",
            Self::Internal => "internal",
        }
    }
}

/// The scope key builder of a table: the host part of `:authority`, repeated
/// [`RouteTable::fragments`] times.
pub fn scope_key_builder(table: RouteTable) -> scoped_routes::ScopeKeyBuilder {
    let host = FragmentBuilder {
        r#type: Some(FragmentType::HeaderValueExtractor(HeaderValueExtractor {
            name: AUTHORITY.to_string(),
            element_separator: ":".to_string(),
            extract_type: Some(ExtractType::Index(0)),
        })),
    };
    scoped_routes::ScopeKeyBuilder {
        fragments: vec![host; table.fragments()],
    }
}

/// The `scoped_routes` of a table's HTTP connection manager: scopes and their route
/// configurations over ADS.
pub fn scoped_routes(table: RouteTable) -> ScopedRoutes {
    ScopedRoutes {
        name: table.name().to_string(),
        scope_key_builder: Some(scope_key_builder(table)),
        rds_config_source: Some(ads_source()),
        config_specifier: Some(scoped_routes::ConfigSpecifier::ScopedRds(ScopedRds {
            scoped_rds_config_source: Some(ads_source()),
            srds_resources_locator: String::new(),
        })),
    }
}

/// The scope sending `host` in `table` to RouteConfiguration `route_configuration`. Loaded
/// eagerly (not on demand), so the first request finds its routes.
pub fn scope(table: RouteTable, host: &str, route_configuration: &str) -> ScopedRouteConfiguration {
    ScopedRouteConfiguration {
        on_demand: false,
        name: names::scope(table, host),
        route_configuration_name: route_configuration.to_string(),
        route_configuration: None,
        key: Some(Key {
            fragments: vec![
                key::Fragment {
                    r#type: Some(key::fragment::Type::StringKey(host.to_string())),
                };
                table.fragments()
            ],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_distinct_key_shapes() {
        let mut counts: Vec<usize> = RouteTable::ALL.iter().map(|t| t.fragments()).collect();
        counts.dedup();
        assert_eq!(counts.len(), RouteTable::ALL.len());
        for t in RouteTable::ALL {
            let s = scope(t, "h.example.com", "ns/ing");
            assert_eq!(s.key.unwrap().fragments.len(), t.fragments());
            assert_eq!(scope_key_builder(t).fragments.len(), t.fragments());
        }
    }

    #[test]
    fn scope_is_named_after_table_and_host() {
        let s = scope(RouteTable::ExternalTls, "h.example.com", "ns/ing");
        assert_eq!(s.name, "external-tls/h.example.com");
        assert_eq!(s.route_configuration_name, "ns/ing");
        assert!(!s.on_demand);
    }
}
