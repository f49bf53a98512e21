//! The cluster state and KIngress builders the translation tests share.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Secret, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::ingress::{INGRESS_CLASS_ANNOTATION, IngressSpec};
use crate::lookup::{Objects, SERVICE_NAME_LABEL};
use crate::translate::*;

pub(crate) const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
pub(crate) const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

pub(crate) fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub(crate) fn port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()).filter(|n: &String| !n.is_empty()),
        port,
        target_port: Some(IntOrString::Int(target)),
        ..Default::default()
    }
}

pub(crate) fn service(ns: &str, name: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn slice(
    ns: &str,
    svc: &str,
    port_name: &str,
    port: i32,
    ready: &[&str],
    not_ready: &[&str],
) -> EndpointSlice {
    let ep = |a: &&str, r: bool| Endpoint {
        addresses: vec![a.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(r),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut m = meta(ns, &format!("{svc}-abcde"));
    m.labels = Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into());
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: Some(
            ready
                .iter()
                .map(|a| ep(a, true))
                .chain(not_ready.iter().map(|a| ep(a, false)))
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some(port_name.into()),
            port: Some(port),
            ..Default::default()
        }]),
    }
}

pub(crate) fn tls_secret(ns: &str, name: &str, cert: &str, key: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([("tls.crt".to_string(), ByteString(cert.into()))]);
    if let Some(k) = key {
        data.insert("tls.key".into(), ByteString(k.into()));
    }
    Secret {
        metadata: meta(ns, name),
        data: Some(data),
        type_: Some("kubernetes.io/tls".into()),
        ..Default::default()
    }
}

/// The cluster state the cases translate against.
pub(crate) fn objects() -> Objects {
    let mut o = Objects::new();
    o.add_service(service(
        "default",
        "hello-00001",
        vec![port("http", 80, 8012)],
    ))
    .add_endpoint_slice(slice(
        "default",
        "hello-00001",
        "http",
        8012,
        &["10.0.0.2", "10.0.0.1"],
        &["10.0.0.3"],
    ))
    .add_service(service(
        "default",
        "hello-00002",
        vec![port("http", 80, 8012)],
    ))
    .add_endpoints(Endpoints {
        metadata: meta("default", "hello-00002"),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: "10.0.1.1".into(),
                ..Default::default()
            }]),
            not_ready_addresses: Some(vec![EndpointAddress {
                ip: "10.0.1.2".into(),
                ..Default::default()
            }]),
            ports: Some(vec![CorePort {
                name: Some("http".into()),
                port: 8012,
                ..Default::default()
            }]),
        }]),
    })
    .add_service(service(
        "default",
        "grpc-00001",
        vec![port("http2", 80, 8080)],
    ))
    .add_endpoint_slice(slice(
        "default",
        "grpc-00001",
        "http2",
        8080,
        &["10.0.2.1"],
        &[],
    ))
    .add_service(service(
        "default",
        "h2c-app",
        vec![ServicePort {
            app_protocol: Some("kubernetes.io/h2c".into()),
            ..port("web", 81, 9000)
        }],
    ))
    .add_service(Service {
        metadata: meta("default", "ext"),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("example.org".into()),
            ports: Some(vec![port("http", 80, 80)]),
            ..Default::default()
        }),
        ..Default::default()
    })
    .add_service(Service {
        metadata: meta("default", "ext-noports"),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("example.org".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .add_service(Service {
        metadata: meta("default", "ext-broken"),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .add_secret(tls_secret("default", "tls-cert", CERT, Some(KEY)))
    .add_secret(tls_secret("default", "no-key", CERT, None))
    .add_secret(tls_secret("default", "not-pem", "hello", Some(KEY)));
    o
}

/// A KIngress `default/hello` of Sluice's class with the given spec.
pub(crate) fn kingress(spec: &str) -> Ingress {
    let mut ing = Ingress {
        metadata: meta("default", "hello"),
        ..Default::default()
    };
    ing.metadata.annotations = Some(BTreeMap::from([(
        INGRESS_CLASS_ANNOTATION.to_string(),
        crate::ingress::SLUICE_INGRESS_CLASS.to_string(),
    )]));
    ing.spec = serde_yaml::from_str::<IngressSpec>(spec).expect("spec YAML");
    ing
}

pub(crate) fn key() -> IngressKey {
    IngressKey::new("default", "hello")
}

pub(crate) fn ep(ip: &str, port: u32) -> (IpAddr, u32) {
    (ip.parse().unwrap(), port)
}

pub(crate) fn rev_headers(rev: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "Knative-Serving-Namespace".to_string(),
            "default".to_string(),
        ),
        ("Knative-Serving-Revision".to_string(), rev.to_string()),
    ])
}
