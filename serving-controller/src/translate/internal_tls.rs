//! Knative's `system-internal-tls`: TLS from the gateway to the activator and the queue-proxies,
//! as net-kourier does it (`pkg/generator/ingress_translator.go`, `buildTrustChain`).
//!
//! When `config-network` turns it on, every KIngress split's cluster — except those of paths
//! with a `rewriteHost`, which point at the gateway itself — speaks TLS 1.3 to its endpoints
//! (serving then names port 443 of the revision's Services, i.e. 8112 of the activator or
//! queue-proxy), without SNI, trusting `ca.crt` of the Secret `routing-serving-certs` in
//! Knative's system namespace and accepting only the certificates of the activator
//! (`kn-routing`) or of the split's namespace's queue-proxies (`kn-user-<namespace>`). The CA
//! travels inline in the cluster (it is public); the clusters are named apart
//! (`ns/svc:port/tls`), so a Service reached both ways keeps both.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, TlsParameters,
    UpstreamTlsContext, common_tls_context, subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use sluice_xds::builders::any;

use super::TranslateError;
use crate::ingress::IngressKey;
use crate::kourier::SYSTEM_NAMESPACE;
use crate::lookup::Lookup;

/// Knative's networking ConfigMap (in the system namespace).
pub const CONFIG_NETWORK: &str = "config-network";
/// Its key turning internal TLS on (`enabled` / `disabled`).
pub const SYSTEM_INTERNAL_TLS: &str = "system-internal-tls";
/// The older key, consulted only when the new one is absent, empty or `disabled`.
pub const INTERNAL_ENCRYPTION: &str = "internal-encryption";
/// The Secret whose `ca.crt` the gateway trusts (in the system namespace).
pub const ROUTING_CA_SECRET: &str = "routing-serving-certs";
/// Its key holding the CA.
pub const CA_KEY: &str = "ca.crt";
/// The activator's certificate name.
pub const ACTIVATOR_SAN: &str = "kn-routing";

/// Whether `config-network`'s `data` turns internal TLS on, with Knative's rules and messages
/// (`pkg/config`): `system-internal-tls` is `enabled` or `disabled` (any case); the older
/// `internal-encryption` (`true`/`false`, Go's booleans) counts only when the new key is
/// absent, empty or `disabled`.
pub fn enabled(data: &BTreeMap<String, String>) -> Result<bool, String> {
    let new = data
        .get(SYSTEM_INTERNAL_TLS)
        .map(|v| v.trim().to_ascii_lowercase());
    match new.as_deref() {
        Some("enabled") => return Ok(true),
        None | Some("") | Some("disabled") => {}
        Some(other) => {
            return Err(format!(
                "{SYSTEM_INTERNAL_TLS} = {other:?}: want \"enabled\" or \"disabled\""
            ));
        }
    }
    match data.get(INTERNAL_ENCRYPTION).map(|v| v.trim()) {
        None | Some("") => Ok(false),
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        Some(other) => Err(format!(
            "{INTERNAL_ENCRYPTION} = {other:?}: want \"true\" or \"false\""
        )),
    }
}

/// The CA every internal-TLS cluster trusts: `ca.crt` of `routing-serving-certs`. `field` is
/// the split that needs it (the error names it).
pub(crate) fn trusted_ca(
    lookup: &impl Lookup,
    ingress: &IngressKey,
    field: &str,
) -> Result<Vec<u8>, TranslateError> {
    let fail = |message: String| TranslateError::InternalTls {
        ingress: ingress.clone(),
        field: field.to_string(),
        message,
    };
    let secret = lookup
        .secret(SYSTEM_NAMESPACE, ROUTING_CA_SECRET)
        .ok_or_else(|| {
            fail(format!(
                "secret {SYSTEM_NAMESPACE}/{ROUTING_CA_SECRET} not found"
            ))
        })?;
    let ca = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CA_KEY))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            fail(format!(
                "secret {SYSTEM_NAMESPACE}/{ROUTING_CA_SECRET} has no {CA_KEY:?}"
            ))
        })?;
    // Checked here, so a bad CA is reported on the KIngress instead of NACKed by Envoy.
    let at = format!("secret {SYSTEM_NAMESPACE}/{ROUTING_CA_SECRET} key {CA_KEY:?}");
    let mut certificates = 0;
    for pem in x509_parser::pem::Pem::iter_from_buffer(&ca) {
        match pem {
            Ok(p) if p.label == "CERTIFICATE" => {
                x509_parser::parse_x509_certificate(&p.contents).map_err(|e| {
                    fail(format!("{at} holds a certificate that does not parse: {e}"))
                })?;
                certificates += 1;
            }
            Ok(_) => {}
            Err(e) => return Err(fail(format!("{at} is not PEM: {e}"))),
        }
    }
    if certificates == 0 {
        return Err(fail(format!("{at} holds no PEM certificate")));
    }
    Ok(ca)
}

/// The cluster name of a split spoken to over internal TLS.
pub(crate) fn cluster_name(base: &str) -> String {
    format!("{base}/tls")
}

/// TLS 1.3 to the split's endpoints in `namespace`, trusting `ca`, accepting the activator's
/// or that namespace's queue-proxy certificate; ALPN `h2` for an HTTP/2 backend.
pub(crate) fn transport_socket(ca: &[u8], namespace: &str, h2: bool) -> TransportSocket {
    let san = |name: String| SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Dns as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(name)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            alpn_protocols: if h2 {
                vec!["h2".to_string()]
            } else {
                Vec::new()
            },
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(data_source::Specifier::InlineBytes(ca.to_vec())),
                            ..Default::default()
                        }),
                        match_typed_subject_alt_names: vec![
                            san(ACTIVATOR_SAN.to_string()),
                            san(format!("kn-user-{}", namespace.to_ascii_lowercase())),
                        ],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A self-signed EC certificate (openssl, valid for a century).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBezCCASGgAwIBAgIUbMt8B58ZC6jcgV7GJ+o+FCHxK/owCgYIKoZIzj0EAwIw\nEjEQMA4GA1UEAwwHdGVzdCBDQTAgFw0yNjEyMDcxODA1MTNaGA8yMTI2MTExMzE4\nMDUxM1owEjEQMA4GA1UEAwwHdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEH\nA0IABAyrcco+FpvmEImgXz41ENAA1k4XVc1uRW/aMfwRZjngDj6ESz5d5l83O7Qa\n+FS0KVKY+c8TDEqrQqc88io31gyjUzBRMB0GA1UdDgQWBBQi88XEwr5PE7tV6Vvo\n+b+qWSmddTAfBgNVHSMEGDAWgBQi88XEwr5PE7tV6Vvo+b+qWSmddTAPBgNVHRMB\nAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIDTtxpR8N0QQjS0WIL8o/WlQvZFz\n5dCNOYRRPv2rlZBbAiEApT0AQ1LtI8zPXHlEXRwLuCoZGhl6R+TMGj1PHsu500M=\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_ca_that_is_not_a_certificate_is_reported() {
        use crate::translate::tests::fixtures::{objects, tls_secret};
        let key = crate::ingress::IngressKey::new("default", "hello");
        let with = |ca: &str| {
            let mut o = objects();
            let mut s = tls_secret(SYSTEM_NAMESPACE, ROUTING_CA_SECRET, "", None);
            s.data = Some(BTreeMap::from([(
                CA_KEY.to_string(),
                k8s_openapi::ByteString(ca.into()),
            )]));
            o.add_secret(s);
            trusted_ca(&o, &key, "f").map_err(|e| e.to_string())
        };
        assert!(with(TEST_CA).is_ok());
        let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = with(broken).unwrap_err();
        assert!(e.contains("does not parse"), "{e}");
        let e = with("hello").unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn splits_speak_tls_to_the_activator_and_their_namespaces_queue_proxies() {
        use crate::translate::tests::fixtures::{kingress, objects, tls_secret};
        use crate::translate::{TranslateOptions, translate_ingress_with};
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use prost::Message;

        let spec = r#"
rules:
  - hosts: [hello.example.com]
    visibility: ExternalIP
    http:
      paths:
        - path: /mapped
          rewriteHost: hello.default.svc.cluster.local
          splits: [{serviceName: hello-00002, serviceNamespace: default, servicePort: 80}]
        - splits: [{serviceName: hello-00001, serviceNamespace: default, servicePort: 80}]
"#;
        let on = TranslateOptions {
            internal_tls: true,
            ..Default::default()
        };
        // Without the CA: an error naming the split that needs it.
        let e = translate_ingress_with(&kingress(spec), &objects(), &on).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ingress default/hello: spec.rules[0].http.paths[1].splits[0]: system-internal-tls \
             is on but secret knative-serving/routing-serving-certs not found"
        );
        let mut o = objects();
        let mut ca = tls_secret(SYSTEM_NAMESPACE, ROUTING_CA_SECRET, "", None);
        ca.data = Some(BTreeMap::from([(
            CA_KEY.to_string(),
            k8s_openapi::ByteString(TEST_CA.into()),
        )]));
        o.add_secret(ca);
        let t = translate_ingress_with(&kingress(spec), &o, &on).expect("translates");
        let clusters: BTreeMap<String, Cluster> = t
            .resources()
            .into_iter()
            .filter(|r| r.type_url().ends_with("Cluster"))
            .map(|r| {
                let c = Cluster::decode(r.body().value.as_slice()).unwrap();
                (c.name.clone(), c)
            })
            .collect();
        let names: Vec<&str> = clusters.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["default/hello-00001:80/tls", "default/hello-00002:80"],
            "the rewriteHost path stays plain"
        );
        let socket = clusters["default/hello-00001:80/tls"]
            .transport_socket
            .clone()
            .expect("TLS");
        assert_eq!(
            socket,
            transport_socket(TEST_CA.as_bytes(), "default", false)
        );
        let Some(transport_socket::ConfigType::TypedConfig(any)) = socket.config_type else {
            panic!("typed config")
        };
        let ctx = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
        assert_eq!(ctx.sni, "", "no SNI, as Kourier");
        let common = ctx.common_tls_context.unwrap();
        let params = common.tls_params.unwrap();
        assert_eq!(
            (
                params.tls_minimum_protocol_version,
                params.tls_maximum_protocol_version
            ),
            (
                tls_parameters::TlsProtocol::TlSv13 as i32,
                tls_parameters::TlsProtocol::TlSv13 as i32
            )
        );
        let Some(common_tls_context::ValidationContextType::ValidationContext(v)) =
            common.validation_context_type
        else {
            panic!("validation context")
        };
        let sans: Vec<String> = v
            .match_typed_subject_alt_names
            .iter()
            .map(|m| match &m.matcher.as_ref().unwrap().match_pattern {
                Some(string_matcher::MatchPattern::Exact(s)) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sans, ["kn-routing", "kn-user-default"]);
        // Off: the same KIngress, plain clusters under their usual names.
        let off = translate_ingress_with(&kingress(spec), &o, &TranslateOptions::default())
            .expect("translates");
        assert!(off.resources().iter().all(|r| !r.name().ends_with("/tls")));
    }

    #[test]
    fn config_network_keys_follow_knative() {
        assert_eq!(enabled(&data(&[])), Ok(false));
        assert_eq!(
            enabled(&data(&[(SYSTEM_INTERNAL_TLS, "Enabled")])),
            Ok(true)
        );
        assert_eq!(
            enabled(&data(&[(SYSTEM_INTERNAL_TLS, "disabled")])),
            Ok(false)
        );
        // The older key counts only when the new one says nothing or "disabled".
        assert_eq!(enabled(&data(&[(INTERNAL_ENCRYPTION, "true")])), Ok(true));
        assert_eq!(
            enabled(&data(&[
                (SYSTEM_INTERNAL_TLS, "disabled"),
                (INTERNAL_ENCRYPTION, "true")
            ])),
            Ok(true)
        );
        assert_eq!(
            enabled(&data(&[
                (SYSTEM_INTERNAL_TLS, "enabled"),
                (INTERNAL_ENCRYPTION, "false")
            ])),
            Ok(true)
        );
        let e = enabled(&data(&[(SYSTEM_INTERNAL_TLS, "on")])).unwrap_err();
        assert!(e.starts_with("system-internal-tls"), "{e}");
        let e = enabled(&data(&[(INTERNAL_ENCRYPTION, "yes")])).unwrap_err();
        assert!(e.starts_with("internal-encryption"), "{e}");
    }
}
