//! TLS termination over SDS.
//!
//! Each Kubernetes Secret a KIngress names becomes one SDS `Secret` (`ns/name`, its `tls.crt`
//! and `tls.key` inline), shared by every filter chain and host that uses it: a certificate is
//! sent once, not copied into each chain (net-kourier's AutoTLS memory problem). Filter chains
//! refer to it by name over ADS.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, TlsCertificate, TlsParameters,
    secret, tls_parameters,
};
use sluice_xds::builders::{ads_source, any};

use super::{TranslateError, names};
use crate::ingress::IngressKey;
use crate::lookup::Lookup;

/// The Secret key holding the certificate chain.
pub const CERT_KEY: &str = "tls.crt";
/// The Secret key holding the private key.
pub const KEY_KEY: &str = "tls.key";
/// ALPN offered on HTTPS listeners: HTTP/2 first, then HTTP/1.1.
pub const ALPN: [&str; 2] = ["h2", "http/1.1"];

/// An SDS secret holding a certificate chain and its key, inline.
pub fn sds_secret(name: &str, cert_chain: &[u8], private_key: &[u8]) -> Secret {
    let inline = |b: &[u8]| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(b.to_vec())),
        ..Default::default()
    };
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain)),
            private_key: Some(inline(private_key)),
            ..Default::default()
        })),
    }
}

/// A downstream TLS context whose certificate is SDS secret `secret_name`, fetched over ADS;
/// `cipher_suites` (`config-kourier`'s, empty for Envoy's defaults) and TLS 1.2 at least, as in
/// Kourier.
pub fn downstream_tls_context(secret_name: &str, cipher_suites: &[String]) -> DownstreamTlsContext {
    DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: secret_name.to_string(),
                sds_config: Some(ads_source()),
            }],
            alpn_protocols: ALPN.iter().map(|p| p.to_string()).collect(),
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv12 as i32,
                cipher_suites: cipher_suites.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The TLS transport socket of a filter chain.
pub fn transport_socket(secret_name: &str, cipher_suites: &[String]) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &downstream_tls_context(secret_name, cipher_suites),
        ))),
    }
}

/// The SDS secret for Kubernetes Secret `namespace/name`, referenced at `field`. `data` wins
/// over `stringData` (which only files carry: the API server folds it into `data`). Both keys
/// must be present and look like PEM, so that a broken Secret fails here, on its KIngress,
/// rather than as an Envoy NACK of the whole secret update.
pub(crate) fn secret_from_k8s(
    lookup: &impl Lookup,
    ingress: &IngressKey,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<Secret, TranslateError> {
    let sds_name = names::secret(namespace, name);
    let s = lookup
        .secret(namespace, name)
        .ok_or_else(|| TranslateError::SecretNotFound {
            ingress: ingress.clone(),
            field: field.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let (cert, key) = pem_pair(s).map_err(|(key, pem)| match pem {
        false => TranslateError::SecretKeyMissing {
            ingress: ingress.clone(),
            field: field.to_string(),
            secret: sds_name.clone(),
            key,
        },
        true => TranslateError::SecretNotPem {
            ingress: ingress.clone(),
            field: field.to_string(),
            secret: sds_name.clone(),
            key,
        },
    })?;
    Ok(sds_secret(&sds_name, &cert, &key))
}

/// The SDS secret `sds_name` from Kubernetes Secret `namespace/name`, for the gateway's own
/// configuration (a default certificate); `Err` says what is wrong.
pub(crate) fn config_secret(
    lookup: &impl Lookup,
    namespace: &str,
    name: &str,
    sds_name: &str,
) -> Result<Secret, String> {
    let s = lookup
        .secret(namespace, name)
        .ok_or_else(|| format!("secret {namespace}/{name} not found"))?;
    let (cert, key) = pem_pair(s).map_err(|(key, pem)| match pem {
        false => format!("secret {namespace}/{name} has no {key:?}"),
        true => format!("secret {namespace}/{name} key {key:?} is not PEM"),
    })?;
    Ok(sds_secret(sds_name, &cert, &key))
}

/// What is wrong with a Secret's key pair: the key at fault, and whether it is there but not
/// PEM (else missing or empty).
type PairProblem = (&'static str, bool);

/// A Secret's certificate chain and key. `data` wins over `stringData` (which only files
/// carry: the API server folds it into `data`). Both keys must be present and look like PEM,
/// so that a broken Secret fails here rather than as an Envoy NACK. `Err`: the key at fault,
/// and whether it is there but not PEM.
fn pem_pair(s: &k8s_openapi::api::core::v1::Secret) -> Result<(Vec<u8>, Vec<u8>), PairProblem> {
    let value = |key: &'static str| -> Result<Vec<u8>, PairProblem> {
        let bytes = s
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .or_else(|| {
                s.string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|v| v.as_bytes().to_vec())
            })
            .filter(|b| !b.is_empty())
            .ok_or((key, false))?;
        let pem_label = if key == CERT_KEY {
            "CERTIFICATE-----"
        } else {
            "PRIVATE KEY-----"
        };
        let text = String::from_utf8_lossy(&bytes);
        if !(text.contains("-----BEGIN ") && text.contains(pem_label)) {
            return Err((key, true));
        }
        Ok(bytes)
    };
    Ok((value(CERT_KEY)?, value(KEY_KEY)?))
}
