//! What debug surfaces may show of a resource: key material replaced by `[redacted]`, as in
//! Envoy's own `/config_dump`, and what a TLS secret's certificates say about themselves.
//!
//! Envoy marks every field that carries key material with the `udpa.annotations.sensitive`
//! option (a TLS certificate's private key and password, a generic secret, session ticket keys,
//! and so on, wherever they sit — in an SDS `Secret` or inline in a listener's or cluster's TLS
//! context). Redaction follows Envoy's `MessageUtil::redact`: a sensitive field's strings and
//! bytes (and those of every message below it) become `[redacted]`, its other scalars are
//! cleared, and `Any` values are opened and redacted by the type they name. One difference:
//! a sensitive `DataSource` (a key in a file, inline bytes or inline string) becomes
//! `inline_string: "[redacted]"`, readable in JSON and YAML dumps rather than base64. It reads those
//! options from Envoy's descriptor set ([`sluice_proto::ENVOY_DESCRIPTOR_SET`]), so a field
//! Envoy marks sensitive is redacted without this module naming it.
//!
//! Key material goes to Envoy over ADS only: the dump service, CSDS, `sluice xds dump` and
//! `sluice xds watch` show resources through [`redacted`].

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, secret::Type as SecretType,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::resource::{ENDPOINT, Resource, SECRET};

/// What replaces key material.
pub const REDACTED: &str = "[redacted]";

/// A resource as debug surfaces show it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The resource with key material replaced by [`REDACTED`].
    pub body: Any,
    /// Whether anything was replaced.
    pub redacted: bool,
    /// For a TLS secret: its certificate chain (or trusted CAs), in order.
    pub certificates: Vec<CertificateInfo>,
}

/// What a certificate says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Subject alternative names (DNS names, IP addresses, URIs, e-mail addresses).
    pub sans: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: Option<SystemTime>,
    /// End of validity.
    pub not_after: Option<SystemTime>,
    /// Serial number, hex.
    pub serial: String,
    /// Set when the PEM block does not parse as a certificate.
    pub error: Option<String>,
}

/// The resource with key material redacted, plus certificate metadata for TLS secrets.
pub fn redacted(r: &Resource) -> Shown {
    let body = r.body();
    let certificates = if r.type_url() == SECRET {
        Secret::decode(body.value.as_slice())
            .map(|s| secret_certificates(&s))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // Endpoints carry no key material (and are the most numerous): skip the walk.
    if r.type_url() == ENDPOINT {
        return Shown {
            body,
            redacted: false,
            certificates,
        };
    }
    let (body, redacted) = redact_any(body);
    Shown {
        body,
        redacted,
        certificates,
    }
}

/// Redacts an encoded message of any type Envoy's descriptors know. An unknown type is shown
/// as it is: the resource types Sluice serves are all known.
pub fn redact_any(body: Any) -> (Any, bool) {
    let Some(r) = Redactor::get() else {
        return (body, false);
    };
    let Some(desc) = r.message(&body.type_url) else {
        return (body, false);
    };
    let Ok(mut msg) = DynamicMessage::decode(desc, body.value.as_slice()) else {
        return (body, false);
    };
    if !r.redact(&mut msg, false, 0) {
        return (body, false);
    }
    (
        Any {
            type_url: body.type_url,
            value: msg.encode_to_vec(),
        },
        true,
    )
}

/// Envoy's descriptors and the set of fields it marks sensitive.
struct Redactor {
    pool: DescriptorPool,
    sensitive: HashSet<String>,
}

/// Deepest nesting walked (Envoy's configs nest a few dozen levels at most); beyond it a
/// message is shown without looking further, never with a stack overflow.
const MAX_DEPTH: usize = 64;

impl Redactor {
    fn get() -> Option<&'static Redactor> {
        static R: OnceLock<Option<Redactor>> = OnceLock::new();
        R.get_or_init(|| {
            let pool = DescriptorPool::decode(sluice_proto::ENVOY_DESCRIPTOR_SET).ok()?;
            let ext = pool.get_extension_by_name("udpa.annotations.sensitive")?;
            let mut sensitive = HashSet::new();
            for m in pool.all_messages() {
                for f in m.fields() {
                    let opts = f.options();
                    if opts.has_extension(&ext)
                        && matches!(*opts.get_extension(&ext), Value::Bool(true))
                    {
                        sensitive.insert(f.full_name().to_string());
                    }
                }
            }
            Some(Redactor { pool, sensitive })
        })
        .as_ref()
    }

    fn message(&self, type_url: &str) -> Option<MessageDescriptor> {
        let name = type_url.rsplit('/').next()?;
        self.pool.get_message_by_name(name)
    }

    /// Redacts `msg` in place; whether anything changed.
    fn redact(&self, msg: &mut DynamicMessage, sensitive: bool, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        let desc = msg.descriptor();
        if desc.full_name() == "google.protobuf.Any" {
            return self.redact_nested_any(msg, sensitive, depth);
        }
        if sensitive && desc.full_name() == "envoy.config.core.v3.DataSource" {
            // Key material as a readable `inline_string: "[redacted]"` whatever form it had
            // (Envoy writes the marker into the bytes, which JSON shows as base64).
            if msg.fields().next().is_none() {
                return false;
            }
            msg.clear();
            msg.set_field_by_name("inline_string", Value::String(REDACTED.to_string()));
            return true;
        }
        let fields: Vec<_> = msg.fields().map(|(f, _)| f).collect();
        let mut changed = false;
        for f in fields {
            let sens = sensitive || self.sensitive.contains(f.full_name());
            let v = msg.get_field_mut(&f);
            changed |= self.redact_value(v, sens, depth);
        }
        changed
    }

    fn redact_value(&self, v: &mut Value, sensitive: bool, depth: usize) -> bool {
        match v {
            Value::Message(m) => self.redact(m, sensitive, depth + 1),
            Value::List(items) => items.iter_mut().fold(false, |c, item| {
                self.redact_value(item, sensitive, depth) | c
            }),
            Value::Map(map) => map.values_mut().fold(false, |c, item| {
                self.redact_value(item, sensitive, depth) | c
            }),
            _ if !sensitive => false,
            Value::String(s) => {
                *s = REDACTED.to_string();
                true
            }
            Value::Bytes(b) => {
                *b = REDACTED.as_bytes().to_vec().into();
                true
            }
            Value::Bool(b) => std::mem::take(b),
            Value::I32(n) | Value::EnumNumber(n) => std::mem::take(n) != 0,
            Value::I64(n) => std::mem::take(n) != 0,
            Value::U32(n) => std::mem::take(n) != 0,
            Value::U64(n) => std::mem::take(n) != 0,
            Value::F32(n) => std::mem::take(n) != 0.0,
            Value::F64(n) => std::mem::take(n) != 0.0,
        }
    }

    /// An `Any` inside a message: opened by the type it names, redacted, packed again.
    fn redact_nested_any(&self, msg: &mut DynamicMessage, sensitive: bool, depth: usize) -> bool {
        let type_url = match msg.get_field_by_name("type_url").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => return false,
        };
        let value = match msg.get_field_by_name("value").as_deref() {
            Some(Value::Bytes(b)) => b.clone(),
            _ => return false,
        };
        let Some(desc) = self.message(&type_url) else {
            // A type Envoy's descriptors do not know: nothing can be told about it, so a
            // sensitive one is hidden whole.
            if sensitive {
                msg.set_field_by_name("value", Value::Bytes(REDACTED.as_bytes().to_vec().into()));
                return true;
            }
            return false;
        };
        let Ok(mut inner) = DynamicMessage::decode(desc, value.as_ref()) else {
            return false;
        };
        if !self.redact(&mut inner, sensitive, depth + 1) {
            return false;
        }
        msg.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
        true
    }
}

/// The certificates a TLS secret carries: its chain, or a validation context's trusted CAs.
fn secret_certificates(s: &Secret) -> Vec<CertificateInfo> {
    match &s.r#type {
        Some(SecretType::TlsCertificate(t)) => t
            .certificate_chain
            .as_ref()
            .map(pem_certificates)
            .unwrap_or_default(),
        Some(SecretType::ValidationContext(v)) => v
            .trusted_ca
            .as_ref()
            .map(pem_certificates)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Every certificate of an inline PEM bundle (a file or environment variable is not read).
fn pem_certificates(d: &DataSource) -> Vec<CertificateInfo> {
    let bytes: &[u8] = match &d.specifier {
        Some(Specifier::InlineBytes(b)) => b,
        Some(Specifier::InlineString(s)) => s.as_bytes(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        match pem {
            Ok(p) if p.label == "CERTIFICATE" => out.push(describe(&p.contents)),
            Ok(_) => {}
            Err(e) => {
                out.push(CertificateInfo {
                    error: Some(format!("not a PEM block: {e}")),
                    ..Default::default()
                });
                break;
            }
        }
    }
    out
}

/// One DER certificate's fields.
pub fn describe(der: &[u8]) -> CertificateInfo {
    use x509_parser::prelude::*;
    let cert = match X509Certificate::from_der(der) {
        Ok((_, c)) => c,
        Err(e) => {
            return CertificateInfo {
                error: Some(format!("not an X.509 certificate: {e}")),
                ..Default::default()
            };
        }
    };
    let time = |t: ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
        }
    };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            sans.push(match n {
                GeneralName::DNSName(d) => format!("DNS:{d}"),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(ip);
                        format!("IP:{}", std::net::Ipv6Addr::from(a))
                    }
                    _ => "IP:?".to_string(),
                },
                GeneralName::URI(u) => format!("URI:{u}"),
                GeneralName::RFC822Name(m) => format!("email:{m}"),
                other => format!("{other}"),
            });
        }
    }
    CertificateInfo {
        subject: cert.subject().to_string(),
        sans,
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: cert.raw_serial_as_string().replace(':', ""),
        error: None,
    }
}

#[cfg(test)]
mod tests;
