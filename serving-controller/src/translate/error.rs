//! Why a KIngress could not be translated.

use crate::ingress::{FieldError, IngressKey, SLUICE_INGRESS_CLASS, describe};

/// Why a KIngress could not be translated. Each names the KIngress and, where it applies, the
/// field (Knative's path syntax) that led to the problem. The previous translation of the
/// KIngress, if any, keeps being served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The KIngress is not of Sluice's class; it must be left alone.
    #[error("ingress {ingress} has ingress class {class:?}, not {SLUICE_INGRESS_CLASS:?}")]
    OtherClass {
        /// The KIngress.
        ingress: IngressKey,
        /// Its class annotation, if any.
        class: Option<String>,
    },
    /// Knative's validation rejects the KIngress (e.g. split percentages not summing to 100).
    #[error("ingress {ingress} is invalid: {}", describe(.errors))]
    Invalid {
        /// The KIngress.
        ingress: IngressKey,
        /// Knative's errors, with field paths.
        errors: Vec<FieldError>,
    },
    /// A host Sluice cannot route: empty, a wildcard, or carrying a port or path.
    #[error("ingress {ingress}: {field}: host {host:?} is not supported: {reason}")]
    UnsupportedHost {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.rules[i].hosts[j]`.
        field: String,
        /// The host.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value Envoy would refuse (a header carrying CR/LF, `appendHeaders` setting `Host`, a
    /// path without a leading `/`, …): the KIngress is not sent to Envoy at all.
    #[error("ingress {ingress}: {field}: {value:?} is not accepted: {reason}")]
    Unacceptable {
        /// The KIngress.
        ingress: IngressKey,
        /// The field, in Knative's path syntax.
        field: String,
        /// The value (shortened to 128 bytes).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A split names a Service that does not exist (yet).
    #[error("ingress {ingress}: {field}: service {namespace}/{name} not found")]
    ServiceNotFound {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.rules[i].http.paths[j].splits[k].serviceName`.
        field: String,
        /// Service namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// A split names a port its Service does not have.
    #[error("ingress {ingress}: {field}: service {service} has no port {port}")]
    PortNotFound {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.rules[i].http.paths[j].splits[k].servicePort`.
        field: String,
        /// `ns/name` of the Service.
        service: String,
        /// The port asked for (number, or quoted name).
        port: String,
    },
    /// A Service of type ExternalName has no `spec.externalName`.
    #[error(
        "ingress {ingress}: {field}: service {service} is of type ExternalName but has no spec.externalName"
    )]
    ExternalNameMissing {
        /// The KIngress.
        ingress: IngressKey,
        /// The split's `serviceName` field.
        field: String,
        /// `ns/name` of the Service.
        service: String,
    },
    /// A TLS block names a Secret that does not exist (yet).
    #[error("ingress {ingress}: {field}: secret {namespace}/{name} not found")]
    SecretNotFound {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.tls[i].secretName`.
        field: String,
        /// Secret namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// The Secret lacks `tls.crt` or `tls.key` (or it is empty).
    #[error("ingress {ingress}: {field}: secret {secret} has no {key:?}")]
    SecretKeyMissing {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.tls[i].secretName`.
        field: String,
        /// `ns/name` of the Secret.
        secret: String,
        /// `tls.crt` or `tls.key`.
        key: &'static str,
    },
    /// Knative's `system-internal-tls` is on, but the CA to trust is not there.
    #[error("ingress {ingress}: {field}: system-internal-tls is on but {message}")]
    InternalTls {
        /// The KIngress.
        ingress: IngressKey,
        /// The split that would be spoken to over TLS.
        field: String,
        /// What is missing.
        message: String,
    },
    /// The Secret's `tls.crt` or `tls.key` is not PEM.
    #[error("ingress {ingress}: {field}: secret {secret} key {key:?} is not PEM")]
    SecretNotPem {
        /// The KIngress.
        ingress: IngressKey,
        /// `spec.tls[i].secretName`.
        field: String,
        /// `ns/name` of the Secret.
        secret: String,
        /// `tls.crt` or `tls.key`.
        key: &'static str,
    },
}

impl TranslateError {
    /// The KIngress the error is about.
    pub fn ingress(&self) -> &IngressKey {
        match self {
            Self::OtherClass { ingress, .. }
            | Self::Invalid { ingress, .. }
            | Self::UnsupportedHost { ingress, .. }
            | Self::Unacceptable { ingress, .. }
            | Self::ServiceNotFound { ingress, .. }
            | Self::PortNotFound { ingress, .. }
            | Self::ExternalNameMissing { ingress, .. }
            | Self::SecretNotFound { ingress, .. }
            | Self::SecretKeyMissing { ingress, .. }
            | Self::SecretNotPem { ingress, .. }
            | Self::InternalTls { ingress, .. } => ingress,
        }
    }
}
