use super::*;
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, GenericSecret,
    TlsCertificate,
};
use prost::Name;

/// A self-signed test certificate (CN hello.example.com) and its key: fixtures only.
const CERT: &str = include_str!("test-cert.pem");
const KEY: &str = include_str!("test-key.pem");

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

fn tls_secret() -> Secret {
    Secret {
        name: "default/hello-tls".into(),
        r#type: Some(SecretType::TlsCertificate(TlsCertificate {
            certificate_chain: inline(CERT),
            private_key: Some(DataSource {
                specifier: Some(Specifier::InlineBytes(KEY.as_bytes().to_vec())),
                ..Default::default()
            }),
            password: inline("hunter2"),
            ..Default::default()
        })),
    }
}

fn shown_text(s: &Shown) -> String {
    String::from_utf8_lossy(&s.body.value).into_owned()
}

#[test]
fn tls_secret_shows_its_certificate_and_hides_its_key() {
    let r = Resource::new("default/hello-tls", &tls_secret());
    let shown = redacted(&r);
    assert!(shown.redacted);
    let text = shown_text(&shown);
    assert!(!text.contains("PRIVATE KEY"), "key material left: {text}");
    assert!(!text.contains("hunter2"), "password left");
    assert!(
        text.contains("BEGIN CERTIFICATE"),
        "the chain is not secret"
    );
    let secret = Secret::decode(shown.body.value.as_slice()).unwrap();
    let Some(SecretType::TlsCertificate(t)) = secret.r#type else {
        panic!("still a TLS certificate")
    };
    let key = t.private_key.unwrap().specifier.unwrap();
    assert_eq!(key, Specifier::InlineString(REDACTED.into()));
    assert_eq!(shown.certificates.len(), 1);
    let c = &shown.certificates[0];
    assert!(c.subject.contains("CN=hello.example.com"), "{}", c.subject);
    assert_eq!(c.subject, c.issuer, "self-signed");
    assert_eq!(
        c.sans,
        ["DNS:hello.example.com", "DNS:*.example.com", "IP:127.0.0.1"]
    );
    assert!(c.not_after.unwrap() > c.not_before.unwrap());
    assert_eq!(c.serial.len(), 40, "{}", c.serial);
    assert!(c.error.is_none());
    // The resource itself is untouched: Envoy gets the key.
    assert!(String::from_utf8_lossy(&r.body().value).contains("PRIVATE KEY"));
}

#[test]
fn generic_secret_is_redacted() {
    let s = Secret {
        name: "token".into(),
        r#type: Some(SecretType::GenericSecret(GenericSecret {
            secret: inline("s3cr3t-token"),
            ..Default::default()
        })),
    };
    let shown = redacted(&Resource::new("token", &s));
    assert!(shown.redacted);
    assert!(!shown_text(&shown).contains("s3cr3t-token"));
}

#[test]
fn validation_context_lists_trusted_cas_and_redacts_nothing() {
    let s = Secret {
        name: "ca".into(),
        r#type: Some(SecretType::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(CERT),
                ..Default::default()
            },
        )),
    };
    let shown = redacted(&Resource::new("ca", &s));
    assert!(!shown.redacted);
    assert_eq!(shown.certificates.len(), 1);
}

#[test]
fn inline_key_in_a_listener_is_redacted_through_any() {
    let tls = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: inline(CERT),
                private_key: inline(KEY),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let l = Listener {
        name: "https".into(),
        filter_chains: vec![FilterChain {
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(
                    envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                        Any {
                            type_url: DownstreamTlsContext::type_url(),
                            value: tls.encode_to_vec(),
                        },
                    ),
                ),
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let shown = redacted(&Resource::new("https", &l));
    assert!(shown.redacted);
    let back = Listener::decode(shown.body.value.as_slice()).unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &back.filter_chains[0]
        .transport_socket
        .as_ref()
        .unwrap()
        .config_type
    else {
        panic!()
    };
    let inner = DownstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let cert = &inner.common_tls_context.unwrap().tls_certificates[0];
    assert_eq!(cert.private_key, inline(REDACTED));
    assert_eq!(cert.certificate_chain, inline(CERT));
}

#[test]
fn resources_without_secrets_are_shown_unchanged() {
    let l = Listener {
        name: "http".into(),
        ..Default::default()
    };
    let r = Resource::new("http", &l);
    let shown = redacted(&r);
    assert!(!shown.redacted);
    assert_eq!(shown.body, r.body());
}

#[test]
fn garbage_certificate_is_reported_not_fatal() {
    let s = Secret {
        name: "bad".into(),
        r#type: Some(SecretType::TlsCertificate(TlsCertificate {
            certificate_chain: inline(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            private_key: inline("x"),
            ..Default::default()
        })),
    };
    let shown = redacted(&Resource::new("bad", &s));
    assert_eq!(shown.certificates.len(), 1);
    assert!(shown.certificates[0].error.is_some());
}
