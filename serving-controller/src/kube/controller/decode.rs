//! The `serving.knative.dev/v1` objects as the API server sends them, decoded one by one.
//!
//! The watches go through [`DynamicObject`] (as the gateway's KIngress watch does): the typed
//! objects reject unknown `spec` fields, as Knative's webhook does, and with a typed LIST one such
//! object would fail the whole list. Decoded here one at a time, a bad object is confined to
//! itself: it becomes an [`Observed`] stub (metadata and status, empty spec) carrying serde's
//! message, which names the field, and the controller writes that message to its status.

use ::kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kube::resource::strip_meta;
use crate::kube::runtime::crds::{
    CONFIGURATION_PLURAL, REVISION_PLURAL, ROUTE_PLURAL, SERVICE_PLURAL,
};
use crate::serving::{Configuration, Key, Revision, Route, Service};

/// API group of the serving objects.
pub const SERVING_GROUP: &str = "serving.knative.dev";
/// API version (within the group) of the serving objects.
pub const SERVING_VERSION: &str = "v1";

/// What the controller needs to know about each serving kind.
pub trait ServingObject:
    DeserializeOwned + Serialize + Default + Clone + PartialEq + std::fmt::Debug + Send + 'static
{
    /// `Service`, `Configuration`, …
    const KIND: &'static str;
    /// `services`, `configurations`, …
    const PLURAL: &'static str;
    /// Metadata.
    fn meta(&self) -> &ObjectMeta;
    /// Mutable metadata.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Sets the status from the API server's JSON; a status that does not decode is taken as
    /// empty (it is written by controllers and never read as input).
    fn set_status_json(&mut self, status: serde_json::Value);
    /// The status as JSON (for the status patch).
    fn status_json(&self) -> serde_json::Value;
}

macro_rules! serving_object {
    ($t:ty, $plural:expr) => {
        impl ServingObject for $t {
            const KIND: &'static str = <$t>::KIND;
            const PLURAL: &'static str = $plural;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn set_status_json(&mut self, status: serde_json::Value) {
                self.status = serde_json::from_value(status).unwrap_or_default();
            }
            fn status_json(&self) -> serde_json::Value {
                serde_json::to_value(&self.status).unwrap_or_default()
            }
        }
    };
}

serving_object!(Service, SERVICE_PLURAL);
serving_object!(Configuration, CONFIGURATION_PLURAL);
serving_object!(Revision, REVISION_PLURAL);
serving_object!(Route, ROUTE_PLURAL);

/// The API resource of a serving kind, for `Api<DynamicObject>`.
pub fn api_resource<T: ServingObject>() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SERVING_GROUP, SERVING_VERSION, T::KIND),
        T::PLURAL,
    )
}

/// An object as read from the API server: decoded, or a stub with the reason it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<T> {
    /// The object; when `error` is set, only its metadata and status (the spec is empty).
    pub object: T,
    /// serde's message when the object does not decode (it names the field).
    pub error: Option<String>,
}

impl<T: ServingObject> Observed<T> {
    /// Namespace and name.
    pub fn key(&self) -> Key {
        key_of(self.object.meta())
    }
}

/// The namespace and name in `meta`.
pub fn key_of(meta: &ObjectMeta) -> Key {
    Key::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Decodes one object: `spec` (and any other top-level field) strictly, as Knative's webhook
/// would, `status` leniently. Never fails: an object that does not decode is a stub with the
/// error.
pub fn decode<T: ServingObject>(object: DynamicObject) -> Observed<T> {
    let DynamicObject {
        mut metadata, data, ..
    } = object;
    strip_meta(&mut metadata);
    let mut data = match data {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let status = data.remove("status");
    let meta_json = serde_json::to_value(&metadata).unwrap_or_default();
    data.insert("metadata".into(), meta_json);
    data.insert("kind".into(), T::KIND.into());
    data.insert(
        "apiVersion".into(),
        format!("{SERVING_GROUP}/{SERVING_VERSION}").into(),
    );
    let (mut object, error) = match serde_json::from_value::<T>(serde_json::Value::Object(data)) {
        Ok(object) => (object, None),
        Err(e) => {
            let mut stub = T::default();
            *stub.meta_mut() = metadata;
            (stub, Some(e.to_string()))
        }
    };
    if let Some(status) = status {
        object.set_status_json(status);
    }
    Observed { object, error }
}

/// Decodes an object the API server answered a write with (the same rules as [`decode`]).
pub fn decode_value<T: ServingObject>(value: serde_json::Value) -> Option<Observed<T>> {
    serde_json::from_value::<DynamicObject>(value)
        .ok()
        .map(decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a DynamicObject")
    }

    #[test]
    fn decodes_spec_strictly_and_status_leniently() {
        let ok: Observed<Service> = decode(dynamic(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "default",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"template": {"spec": {"containers": [{"image": "img"}]}}},
            "status": {"observedGeneration": "not a number"}
        })));
        assert_eq!(ok.error, None);
        assert_eq!(ok.key(), Key::new("default", "hello"));
        assert_eq!(ok.object.spec.template.spec.containers[0].image, "img");
        assert_eq!(ok.object.metadata.managed_fields, None);

        let bad: Observed<Service> = decode(dynamic(json!({
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "bad", "namespace": "default", "generation": 3},
            "spec": {"template": {"spec": {"contaners": []}}},
            "status": {"observedGeneration": 2}
        })));
        let error = bad.error.expect("unknown field");
        assert!(error.contains("contaners"), "{error}");
        assert_eq!(bad.object.metadata.generation, Some(3));
        assert_eq!(bad.object.status.observed_generation, Some(2));
    }

    #[test]
    fn api_resources_address_the_serving_group() {
        let ar = api_resource::<Revision>();
        assert_eq!(ar.api_version, "serving.knative.dev/v1");
        assert_eq!(ar.kind, "Revision");
        assert_eq!(ar.plural, "revisions");
    }
}
