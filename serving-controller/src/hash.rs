//! Knative's readiness-probe hash of a KIngress (knative/networking `pkg/ingress/ingress.go`,
//! `ComputeHash` / `InsertProbe`):
//!
//! ```text
//! hex(SHA-256(json.Marshal(ingress.Spec) ++ namespace ++ name))
//! ```
//!
//! `json.Marshal` is Go's `encoding/json`: struct fields in declaration order with their
//! `omitempty` rules (mirrored by the serde attributes of [`crate::ingress`]), map keys sorted,
//! no whitespace, and strings escaped the Go way — which differs from serde_json in one respect:
//! Go also escapes `<`, `>`, `&` (as `\u003c`, `\u003e`, `\u0026`) and U+2028 / U+2029. The
//! `GoFormatter` below adds exactly those escapes. Test vectors from knative/networking's own
//! `TestInsertProbe` pin the result.

use std::io;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ingress::{Ingress, IngressSpec};

/// The request header a probe sends (`override`) and a gateway answers with the hash.
pub const HASH_HEADER: &str = "K-Network-Hash";
/// The value of [`HASH_HEADER`] that marks a probe request.
pub const HASH_HEADER_OVERRIDE: &str = "override";
/// The header identifying a probe request (`K-Network-Probe: probe`).
pub const PROBE_HEADER: &str = "K-Network-Probe";

/// The hex SHA-256 Knative's prober expects in `K-Network-Hash` for this KIngress generation.
pub fn probe_hash(ingress: &Ingress) -> String {
    let mut bytes = go_json(&ingress.spec);
    bytes.extend_from_slice(
        ingress
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("")
            .as_bytes(),
    );
    bytes.extend_from_slice(ingress.metadata.name.as_deref().unwrap_or("").as_bytes());
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spec as Go's `json.Marshal` writes it.
pub fn go_json(spec: &IngressSpec) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Serializing plain data (strings, integers, sorted maps) into a Vec cannot fail.
    if spec.serialize(&mut ser).is_err() {
        out.clear();
    }
    out
}

/// serde_json's compact output plus Go's HTML-safe and line-separator escapes.
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{HttpIngressPath, HttpIngressRuleValue, IngressBackendSplit, IngressRule};

    /// The ingress of knative/networking's `TestInsertProbe` (no namespace, no name).
    fn knative_vector(append: &[(&str, &str)]) -> Ingress {
        let mut ing = Ingress::default();
        ing.spec.rules = vec![IngressRule {
            hosts: vec!["example.com".into()],
            http: Some(HttpIngressRuleValue {
                paths: vec![HttpIngressPath {
                    splits: vec![IngressBackendSplit {
                        service_name: "blah".into(),
                        append_headers: append
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }];
        ing
    }

    #[test]
    fn matches_knative_test_vectors() {
        // knative/networking pkg/ingress/ingress_test.go, TestInsertProbe.
        let cases = [
            (
                knative_vector(&[]),
                "a25000a350642c8abef53078b329bd043e18758f6063c1172d53b04e14fcf5c1",
            ),
            (
                knative_vector(&[("Foo", "bar")]),
                "6b652c7abed871354affd4a9cb699d33816f24541fac942149b91ad872fe63ca",
            ),
        ];
        for (ing, want) in cases {
            assert_eq!(probe_hash(&ing), want);
        }
    }

    #[test]
    fn json_is_go_shaped() {
        let ing = knative_vector(&[("Foo", "bar")]);
        assert_eq!(
            String::from_utf8(go_json(&ing.spec)).unwrap(),
            r#"{"rules":[{"hosts":["example.com"],"http":{"paths":[{"splits":[{"serviceNamespace":"","serviceName":"blah","servicePort":0,"appendHeaders":{"Foo":"bar"}}]}]}}]}"#
        );
    }

    #[test]
    fn escapes_like_go() {
        let mut ing = knative_vector(&[("X", "<a&b>\u{2028}\"\n\u{1}é")]);
        ing.spec.rules[0].hosts = vec![];
        let json = String::from_utf8(go_json(&ing.spec)).unwrap();
        assert!(
            json.contains(r#""X":"\u003ca\u0026b\u003e\u2028\"\n\u0001é""#),
            "{json}"
        );
    }

    #[test]
    fn namespace_name_and_spec_all_count() {
        let base = knative_vector(&[]);
        let mut named = base.clone();
        named.metadata.namespace = Some("ns".into());
        named.metadata.name = Some("a".into());
        let mut renamed = named.clone();
        renamed.metadata.name = Some("b".into());
        let mut edited = named.clone();
        edited.spec.rules[0].hosts.push("other.com".into());
        let mut relabeled = named.clone();
        relabeled.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        relabeled.metadata.generation = Some(7);

        let h = probe_hash(&named);
        assert_eq!(h.len(), 64);
        assert_eq!(h, probe_hash(&named.clone()), "stable");
        assert_ne!(h, probe_hash(&base));
        assert_ne!(h, probe_hash(&renamed));
        assert_ne!(h, probe_hash(&edited));
        assert_eq!(
            h,
            probe_hash(&relabeled),
            "metadata other than ns/name is not hashed"
        );
    }
}
