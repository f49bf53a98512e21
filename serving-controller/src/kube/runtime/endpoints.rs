//! A Revision's EndpointSlices read back: the addresses its Service reaches and whether the
//! Revision is ready.
//!
//! The addresses are resolved by the gateway's own rule ([`ready_endpoints`]) against the
//! private Service [`revision_private_service`] builds (the pods), so the runtime calls a Revision ready exactly when Envoy
//! has an endpoint to send it traffic.

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::objects::{private_service_name, revision_private_service};
use crate::lookup::Objects;
use crate::serving::{Readiness, Revision};
use crate::translate::endpoints::ready_endpoints;

/// What a Revision's EndpointSlices show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionEndpoints {
    /// The ready addresses (IP and the user port), sorted, without duplicates.
    pub ready: Vec<(IpAddr, u32)>,
    /// Endpoints listed with `ready: false` (starting, failing their readiness probe or
    /// terminating).
    pub not_ready: usize,
}

impl RevisionEndpoints {
    /// [`Readiness::Ready`] once one address is ready, else [`Readiness::Pending`] (a Revision
    /// that cannot start at all shows no more than that here).
    pub fn readiness(&self) -> Readiness {
        if self.ready.is_empty() {
            Readiness::Pending
        } else {
            Readiness::Ready
        }
    }
}

/// The endpoints of `revision` from `slices` (those of its private Service, labelled
/// `kubernetes.io/service-name={revision}-private`; others are ignored). A slice without a namespace
/// is taken to be in the Revision's.
pub fn revision_endpoints(revision: &Revision, slices: Vec<EndpointSlice>) -> RevisionEndpoints {
    let namespace = revision.namespace();
    let service = revision_private_service(revision);
    let private = private_service_name(revision.name());
    let Some(port) = service
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.into_iter().next())
    else {
        return RevisionEndpoints::default();
    };
    let mut objects = Objects::new();
    let mut not_ready = 0;
    for mut slice in slices {
        if slice
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            slice.metadata.namespace = Some(namespace.to_string());
        }
        if slice.metadata.namespace.as_deref() != Some(namespace) {
            continue;
        }
        let of_revision = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::lookup::SERVICE_NAME_LABEL))
            .is_some_and(|s| *s == private);
        if !of_revision {
            continue;
        }
        not_ready += slice
            .endpoints
            .iter()
            .flatten()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(false))
            .count();
        objects.add_endpoint_slice(slice);
    }
    RevisionEndpoints {
        ready: ready_endpoints(&objects, namespace, &private, &port),
        not_ready,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ContainerPort;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::lookup::SERVICE_NAME_LABEL;
    use crate::serving::pod::Container;

    fn revision(port_name: Option<&str>) -> Revision {
        let mut revision = Revision::default();
        revision.metadata.name = Some("hello-00001".into());
        revision.metadata.namespace = Some("default".into());
        revision.spec.containers = vec![Container {
            image: "img".into(),
            ports: vec![ContainerPort {
                name: port_name.map(str::to_string),
                container_port: 9000,
                ..ContainerPort::default()
            }],
            ..Container::default()
        }];
        revision
    }

    fn slice(service: &str, port: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-{port}")),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_string(),
                    service.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some(port.into()),
                port: Some(9000),
                ..EndpointPort::default()
            }]),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, ready)| Endpoint {
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ready_addresses_of_the_revision_port_only() {
        let slices = vec![
            slice(
                "hello-00001-private",
                "http",
                &[
                    ("10.0.0.7", Some(true)),
                    ("10.0.0.8", Some(false)),
                    ("10.0.0.9", None),
                ],
            ),
            slice("other", "http", &[("10.0.0.1", Some(true))]),
            // The public Service's slice (the autoscaler's) is not the pods.
            slice("hello-00001", "http", &[("10.0.0.2", Some(true))]),
        ];
        let endpoints = revision_endpoints(&revision(None), slices);
        assert_eq!(
            endpoints.ready,
            vec![(ip("10.0.0.7"), 9000), (ip("10.0.0.9"), 9000)],
            "unset `ready` counts as ready, as the API documents"
        );
        assert_eq!(endpoints.not_ready, 1);
        assert_eq!(endpoints.readiness(), Readiness::Ready);
    }

    #[test]
    fn h2c_revisions_read_their_http2_port() {
        let slices = vec![slice(
            "hello-00001-private",
            "http2",
            &[("10.0.0.7", Some(true))],
        )];
        let endpoints = revision_endpoints(&revision(Some("h2c")), slices.clone());
        assert_eq!(endpoints.ready, vec![(ip("10.0.0.7"), 9000)]);
        let wrong_port = revision_endpoints(&revision(None), slices);
        assert!(
            wrong_port.ready.is_empty(),
            "an `http` Service has no http2 port"
        );
    }

    #[test]
    fn nothing_ready_is_pending() {
        let slices = vec![slice(
            "hello-00001-private",
            "http",
            &[("10.0.0.8", Some(false))],
        )];
        let endpoints = revision_endpoints(&revision(None), slices);
        assert!(endpoints.ready.is_empty());
        assert_eq!(endpoints.readiness(), Readiness::Pending);
        assert_eq!(
            revision_endpoints(&revision(None), vec![]).readiness(),
            Readiness::Pending
        );
    }
}
