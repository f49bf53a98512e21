//! Sluice's own gRPC APIs and the protobuf descriptors the control plane serves.
//!
//! - [`xds::v1`]: the snapshot debug service (`sluice.xds.v1.SnapshotDebug`).
//! - [`autoscaler::v1`]: the stat stream to the autoscaler (`sluice.autoscaler.v1.Stats`).
//! - [`SLUICE_DESCRIPTOR_SET`] / [`ENVOY_DESCRIPTOR_SET`]: encoded
//!   `FileDescriptorSet`s for gRPC server reflection and for rendering Envoy
//!   resources as JSON/YAML ([`descriptor_pool`]).
//!
//! Envoy's own message types come from `envoy-types`, re-exported as [`envoy`].

pub use envoy_types as envoy;

/// Sluice's xDS debug API.
pub mod xds {
    /// Version 1.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("sluice.xds.v1");
    }
}

/// The stat stream from activators to the autoscaler.
pub mod autoscaler {
    /// Version 1.
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("sluice.autoscaler.v1");
    }
}

/// Encoded descriptor set of Sluice's own protos.
pub const SLUICE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

/// Encoded descriptor set of the Envoy APIs Sluice serves or renders: ADS, CSDS,
/// MetricsService, LRS, and the resource types (Listener, RouteConfiguration,
/// ScopedRouteConfiguration, Cluster, ClusterLoadAssignment, Secret, the HTTP
/// connection manager and router, TLS, bootstrap), with all their imports.
///
/// Compiled with protox from the `.proto` sources shipped inside the
/// `envoy-types` crate (`scripts/gen-envoy-descriptors.sh` regenerates it), so
/// it matches the Rust types exactly.
pub const ENVOY_DESCRIPTOR_SET: &[u8] = include_bytes!("../envoy.fds.bin");

/// A descriptor pool holding Envoy's and Sluice's descriptors, for decoding
/// `Any` resources into JSON/YAML.
pub fn descriptor_pool() -> Result<prost_reflect::DescriptorPool, prost_reflect::DescriptorError> {
    let mut pool = prost_reflect::DescriptorPool::decode(ENVOY_DESCRIPTOR_SET)?;
    pool.decode_file_descriptor_set(SLUICE_DESCRIPTOR_SET)?;
    Ok(pool)
}

/// Identifies a revision: `namespace/name`. Shared by the activator and the
/// autoscaler (and carried in their stats messages as two strings).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionKey {
    /// The revision's namespace.
    pub namespace: String,
    /// The revision's name, e.g. `hello-00001`.
    pub name: String,
}

impl RevisionKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for RevisionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_knows_envoy_and_sluice_types() {
        let pool = descriptor_pool().expect("descriptor sets decode");
        for name in [
            "envoy.config.cluster.v3.Cluster",
            "envoy.config.route.v3.RouteConfiguration",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.service.status.v3.ClientStatusDiscoveryService",
            "sluice.xds.v1.SnapshotDebug",
        ] {
            assert!(
                pool.get_message_by_name(name).is_some()
                    || pool.get_service_by_name(name).is_some(),
                "{name} missing from the pool"
            );
        }
    }
}
