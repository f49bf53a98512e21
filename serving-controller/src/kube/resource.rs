//! The KIngress as a kube resource, and decoding what the API server sends.
//!
//! [`Ingress`] implements [`::kube::Resource`] (group `networking.internal.knative.dev`,
//! version `v1alpha1`, kind `Ingress`, plural `ingresses`, namespaced), so `Api<Ingress>` and
//! `ObjectRef<Ingress>` work. The watcher and the status writer nevertheless go through
//! [`DynamicObject`] with [`ingress_api_resource`]: the [`Ingress`] type rejects unknown `spec`
//! fields (as Knative's webhook does), and with a typed list one such object would fail the
//! whole LIST — every KIngress would stop being served. Decoding each object on its own with
//! [`decode_ingress`] confines a bad object to itself; objects of other classes are never
//! decoded at all.

use std::borrow::Cow;

use ::kube::Resource;
use ::kube::core::{ApiResource, DynamicObject};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::KubeError;
use crate::ingress::{
    API_VERSION, INGRESS_CLASS_ANNOTATION, Ingress, IngressKey, IngressSpec, IngressStatus, KIND,
    SLUICE_INGRESS_CLASS,
};

/// API group of the KIngress.
pub const INGRESS_GROUP: &str = "networking.internal.knative.dev";
/// API version (within the group) of the KIngress.
pub const INGRESS_VERSION: &str = "v1alpha1";
/// Plural resource name of the KIngress (the URL segment and the RBAC resource).
pub const INGRESS_PLURAL: &str = "ingresses";

/// The annotation `kubectl apply` stores the last applied object in: as large as the object,
/// and never read by Sluice, so dropped from cached objects.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl Resource for Ingress {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(INGRESS_GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(INGRESS_VERSION)
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(API_VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(INGRESS_PLURAL)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The KIngress resource for `Api<DynamicObject>`.
pub fn ingress_api_resource() -> ApiResource {
    ApiResource::erase::<Ingress>(&())
}

/// The ingress class annotation of an object, if any.
pub fn class_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(INGRESS_CLASS_ANNOTATION)
        .map(String::as_str)
}

/// Whether object metadata carries Sluice's ingress class (see [`crate::ingress::is_ours`]).
pub fn is_ours_meta(meta: &ObjectMeta) -> bool {
    class_of(meta) == Some(SLUICE_INGRESS_CLASS)
}

/// The namespace and name of an object.
pub fn key_of(meta: &ObjectMeta) -> IngressKey {
    IngressKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Drops what a cached object never needs and that can dwarf it: `managedFields` and the
/// `kubectl apply` annotation.
pub fn strip_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Decodes a KIngress from the API server.
///
/// `spec` is decoded strictly (an unknown or mistyped field is an error naming it, as
/// Knative's webhook would reject it). `status` is decoded leniently: it is written by
/// controllers, may carry fields of other Knative versions, and never feeds translation — if it
/// does not decode it is taken as empty. Other top-level fields are ignored.
pub fn decode_ingress(object: DynamicObject) -> Result<Ingress, KubeError> {
    decode_or_stub(object).map_err(|failed| failed.1)
}

/// [`decode_ingress`], returning on failure also the object's metadata and status as a KIngress
/// with an empty spec: enough to address it and write its status, nothing to translate.
pub(crate) fn decode_or_stub(object: DynamicObject) -> Result<Ingress, Box<(Ingress, KubeError)>> {
    let DynamicObject { metadata, data, .. } = object;
    let mut data = match data {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let status = data
        .remove("status")
        .and_then(|value| IngressStatus::deserialize(value).ok())
        .unwrap_or_default();
    // Decoded from a reference, so that the object is still whole if it fails.
    let spec = match data.get("spec") {
        None | Some(serde_json::Value::Null) => Ok(IngressSpec::default()),
        Some(value) => serde_path_to_error::deserialize::<_, IngressSpec>(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            (field, e.into_inner())
        }),
    };
    let ingress = |spec| Ingress {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
        metadata,
        spec,
        status,
    };
    match spec {
        Ok(spec) => Ok(ingress(spec)),
        Err((field, source)) => {
            let stub = ingress(IngressSpec::default());
            let error = KubeError::Decode {
                ingress: key_of(&stub.metadata),
                field,
                source,
            };
            Err(Box::new((stub, error)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a DynamicObject")
    }

    #[test]
    fn resource_addresses_the_kingress_api() {
        assert_eq!(
            Ingress::url_path(&(), Some("ns")),
            "/apis/networking.internal.knative.dev/v1alpha1/namespaces/ns/ingresses"
        );
        let ar = ingress_api_resource();
        assert_eq!(ar.api_version, API_VERSION);
        assert_eq!(ar.kind, "Ingress");
        assert_eq!(ar.plural, "ingresses");
        assert_eq!(
            DynamicObject::url_path(&ar, None),
            "/apis/networking.internal.knative.dev/v1alpha1/ingresses"
        );
    }

    #[test]
    fn decodes_spec_checked_and_status_leniently() {
        let ingress = decode_ingress(dynamic(json!({
            "apiVersion": API_VERSION, "kind": "Ingress",
            "metadata": {"name": "hello", "namespace": "default", "generation": 2,
                "annotations": {INGRESS_CLASS_ANNOTATION: SLUICE_INGRESS_CLASS}},
            "spec": {"rules": [{"hosts": ["hello.default.example.com"], "visibility": "ExternalIP",
                "http": {"paths": [{"splits": [{"serviceName": "hello-00001",
                    "serviceNamespace": "default", "servicePort": 80, "percent": 100}]}]}}]},
            "status": {"observedGeneration": "not a number", "somethingNew": 1}
        })))
        .expect("decodes");
        assert_eq!(ingress.key(), IngressKey::new("default", "hello"));
        assert_eq!(ingress.spec.rules[0].hosts, ["hello.default.example.com"]);
        assert!(
            ingress.status.is_empty(),
            "undecodable status taken as empty"
        );
        assert!(crate::ingress::is_ours(&ingress));

        // An unknown field is ignored, as Go's decoder does (a newer Knative's KIngress)...
        let newer = decode_ingress(dynamic(json!({
            "apiVersion": API_VERSION, "kind": "Ingress",
            "metadata": {"name": "newer", "namespace": "default"},
            "spec": {"rules": [{"hosts": ["a.example.com"], "newRuleField": {"x": 1}}],
                "unknownField": true}
        })))
        .expect("unknown fields are ignored");
        assert_eq!(newer.spec.rules[0].hosts, ["a.example.com"]);
        // ...a field of the wrong type is not.
        let err = decode_ingress(dynamic(json!({
            "apiVersion": API_VERSION, "kind": "Ingress",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"rules": "not a list"}
        })))
        .expect_err("rules of the wrong type");
        let msg = err.to_string();
        assert!(
            msg.contains("default/bad") && msg.contains("spec.rules:"),
            "{msg}"
        );
    }

    #[test]
    fn undecodable_keeps_metadata_and_status() {
        let object = dynamic(json!({
            "apiVersion": API_VERSION, "kind": "Ingress",
            "metadata": {"name": "bad", "namespace": "default", "generation": 4},
            "spec": {"rules": 1},
            "status": {"observedGeneration": 3}
        }));
        let (stub, error) = *decode_or_stub(object).expect_err("rules of the wrong type");
        assert!(matches!(error, KubeError::Decode { .. }));
        assert_eq!(stub.key(), IngressKey::new("default", "bad"));
        assert_eq!(stub.metadata.generation, Some(4));
        assert_eq!(stub.status.observed_generation, Some(3));
        assert!(stub.spec.rules.is_empty());
    }

    #[test]
    fn strips_managed_fields_and_last_applied() {
        let mut meta: ObjectMeta = serde_json::from_value(json!({
            "name": "x",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {LAST_APPLIED: "{…}"}
        }))
        .expect("meta");
        strip_meta(&mut meta);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.annotations, None);
    }
}
