//! Decoding the objects of a YAML/JSON file (one or many documents) into the
//! typed objects the gateway reads, with problems that name the file, the
//! document and the object.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use sluice_serving::Ingress;

/// The kinds the gateway reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `networking.internal.knative.dev/v1alpha1` Ingress.
    Ingress,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `v1` Endpoints.
    Endpoints,
    /// `v1` Secret.
    Secret,
    /// `v1` ConfigMap.
    ConfigMap,
    /// `serving.knative.dev/v1` Service (read by `sluice up`).
    KnativeService,
    /// `serving.knative.dev/v1` Configuration (read by `sluice up`).
    Configuration,
    /// `serving.knative.dev/v1` Route (read by `sluice up`).
    Route,
}

impl Kind {
    fn of(api_version: &str, kind: &str) -> Option<Kind> {
        Some(match (api_version, kind) {
            ("networking.internal.knative.dev/v1alpha1", "Ingress") => Kind::Ingress,
            ("v1", "Service") => Kind::Service,
            ("discovery.k8s.io/v1", "EndpointSlice") => Kind::EndpointSlice,
            ("v1", "Endpoints") => Kind::Endpoints,
            ("v1", "Secret") => Kind::Secret,
            ("v1", "ConfigMap") => Kind::ConfigMap,
            ("serving.knative.dev/v1", "Service") => Kind::KnativeService,
            ("serving.knative.dev/v1", "Configuration") => Kind::Configuration,
            ("serving.knative.dev/v1", "Route") => Kind::Route,
            _ => return None,
        })
    }
}

impl Kind {
    /// Whether `sluice up`'s serving controller reads this kind (the gateway alone does not).
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            Kind::KnativeService | Kind::Configuration | Kind::Route
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Ingress => "Ingress",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Endpoints => "Endpoints",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::KnativeService => "Service.serving.knative.dev",
            Kind::Configuration => "Configuration",
            Kind::Route => "Route",
        })
    }
}

/// Kind, namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace (`default` when unset).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A decoded object.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A KIngress (of any class: the caller filters).
    Ingress(Box<Ingress>),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// An Endpoints object.
    Endpoints(Box<Endpoints>),
    /// A Secret (`stringData` merged into `data`, as the API server does).
    Secret(Box<Secret>),
    /// A ConfigMap.
    ConfigMap(Box<ConfigMap>),
    /// A Knative Service.
    KnativeService(Box<sluice_serving::serving::Service>),
    /// A Knative Configuration.
    Configuration(Box<sluice_serving::serving::Configuration>),
    /// A Knative Route.
    Route(Box<sluice_serving::serving::Route>),
}

impl Object {
    /// A digest of the object's content (its JSON form): equal objects have equal digests,
    /// and a changed one a different digest (128 bits: a collision is not a practical concern).
    pub fn digest(&self) -> u128 {
        let json = match self {
            Object::Ingress(o) => serde_json::to_vec(o),
            Object::Service(o) => serde_json::to_vec(o),
            Object::EndpointSlice(o) => serde_json::to_vec(o),
            Object::Endpoints(o) => serde_json::to_vec(o),
            Object::Secret(o) => serde_json::to_vec(o),
            Object::ConfigMap(o) => serde_json::to_vec(o),
            Object::KnativeService(o) => serde_json::to_vec(o),
            Object::Configuration(o) => serde_json::to_vec(o),
            Object::Route(o) => serde_json::to_vec(o),
        };
        // Serializing these types cannot fail (string keys, no non-finite floats); were it to,
        // the Debug form still tells different objects apart.
        let bytes = json.unwrap_or_else(|_| format!("{self:?}").into_bytes());
        xxhash_rust::xxh3::xxh3_128(&bytes)
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::KnativeService(o) => &o.metadata,
            Object::Configuration(o) => &o.metadata,
            Object::Route(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Ingress(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Endpoints(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::KnativeService(o) => &mut o.metadata,
            Object::Configuration(o) => &mut o.metadata,
            Object::Route(o) => &mut o.metadata,
        }
    }
}

/// Something wrong with a file or an object in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// The object (`Kind ns/name`), when known.
    pub object: Option<String>,
    /// The field, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a file holds.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Objects of known kinds.
    pub objects: Vec<(ObjectKey, Object)>,
    /// Documents that failed, and objects that are invalid.
    pub problems: Vec<Problem>,
    /// `apiVersion kind` of documents of kinds this reader skips.
    pub skipped: Vec<String>,
}

fn key(kind: Kind, meta: &ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey {
        kind,
        namespace: meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        name: meta.name.clone().filter(|n| !n.is_empty())?,
    })
}

/// Decodes every document of `text` (the content of `path`).
pub fn decode(path: &Path, text: &str) -> Decoded {
    let mut out = Decoded::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let problem = |object: Option<String>, message: String| Problem {
            file: path.to_path_buf(),
            object,
            field: None,
            message,
        };
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                out.problems
                    .push(problem(None, format!("document {}: {e}", i + 1)));
                // A syntax error leaves the rest of the stream unreadable.
                break;
            }
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind_name = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if api_version.is_empty() || kind_name.is_empty() {
            out.problems.push(problem(
                None,
                format!(
                    "document {}: not a Kubernetes object (apiVersion and kind are required)",
                    i + 1
                ),
            ));
            continue;
        }
        let Some(kind) = Kind::of(api_version, kind_name) else {
            out.skipped.push(format!("{api_version} {kind_name}"));
            continue;
        };
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        let ns = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_string();
        let label = format!("{kind} {ns}/{name}");
        let typed = match kind {
            Kind::Ingress => typed::<Ingress>(value).map(|i| Object::Ingress(Box::new(i))),
            Kind::Service => typed::<Service>(value).map(|s| Object::Service(Box::new(s))),
            Kind::EndpointSlice => {
                typed::<EndpointSlice>(value).map(|s| Object::EndpointSlice(Box::new(s)))
            }
            Kind::Endpoints => typed::<Endpoints>(value).map(|e| Object::Endpoints(Box::new(e))),
            Kind::Secret => {
                typed::<Secret>(value).map(|s| Object::Secret(Box::new(merge_string_data(s))))
            }
            Kind::ConfigMap => typed::<ConfigMap>(value).map(|c| Object::ConfigMap(Box::new(c))),
            Kind::KnativeService => typed::<sluice_serving::serving::Service>(value)
                .map(|s| Object::KnativeService(Box::new(s))),
            Kind::Configuration => typed::<sluice_serving::serving::Configuration>(value)
                .map(|c| Object::Configuration(Box::new(c))),
            Kind::Route => {
                typed::<sluice_serving::serving::Route>(value).map(|r| Object::Route(Box::new(r)))
            }
        };
        let object = match typed {
            Ok(o) => o,
            Err(e) => {
                out.problems.push(problem(Some(label), e));
                continue;
            }
        };
        if let Object::Service(svc) = &object {
            for (annotation, message) in sluice_serving::lookup::annotation_problems(svc) {
                out.problems.push(Problem {
                    file: path.to_path_buf(),
                    object: Some(label.clone()),
                    field: Some(format!("metadata.annotations[{annotation:?}]")),
                    message,
                });
            }
        }
        match key(kind, object.metadata()) {
            Some(k) => out.objects.push((k, normalise(object))),
            None => out.problems.push(Problem {
                file: path.to_path_buf(),
                object: Some(label),
                field: Some("metadata.name".into()),
                message: "is required".into(),
            }),
        }
    }
    out
}

/// Fills in the namespace (`default`) so lookups by namespace work.
fn normalise(mut o: Object) -> Object {
    let meta = o.metadata_mut();
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".into());
    }
    o
}

fn merge_string_data(mut s: Secret) -> Secret {
    if let Some(sd) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in sd {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    s
}

/// Decodes `value` as `T`, naming the field at fault (`spec.rules: invalid type: …`).
fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = r#"
apiVersion: networking.internal.knative.dev/v1alpha1
kind: Ingress
metadata:
  name: hello
  annotations:
    networking.knative.dev/ingress.class: sluice.ingress.networking.knative.dev
spec:
  rules:
  - hosts: [hello.default.example.com]
    http:
      paths:
      - splits:
        - serviceName: hello
          serviceNamespace: default
          servicePort: 80
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: web}
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
apiVersion: v1
kind: Service
metadata: {}
"#;

    #[test]
    fn multi_document_files_decode_with_problems_named() {
        let d = decode(Path::new("dir/x.yaml"), MULTI);
        let keys: Vec<String> = d.objects.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, vec!["Ingress default/hello", "Secret web/tls"]);
        let Object::Secret(s) = &d.objects[1].1 else {
            panic!()
        };
        assert_eq!(s.data.as_ref().unwrap()["tls.crt"].0, b"CERT");
        assert_eq!(d.skipped, vec!["apps/v1 Deployment"]);
        assert_eq!(d.problems.len(), 1);
        assert_eq!(
            d.problems[0].to_string(),
            "dir/x.yaml: Service default/: metadata.name: is required"
        );
    }

    #[test]
    fn unknown_ingress_fields_are_ignored_and_wrong_types_named() {
        // As Go's decoder: a newer Knative's fields do not make the KIngress unreadable.
        let text = "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {name: a}\nspec: {rulez: [], rules: []}\n";
        let d = decode(Path::new("a.yaml"), text);
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(d.objects.len(), 1);
        let text = "apiVersion: networking.internal.knative.dev/v1alpha1\nkind: Ingress\nmetadata: {name: a}\nspec: {rules: 5}\n";
        let d = decode(Path::new("a.yaml"), text);
        assert!(d.objects.is_empty());
        assert!(
            d.problems[0]
                .message
                .starts_with("spec.rules: invalid type"),
            "{}",
            d.problems[0]
        );
        assert_eq!(d.problems[0].object.as_deref(), Some("Ingress default/a"));
    }

    #[test]
    fn syntax_errors_name_the_document() {
        let d = decode(Path::new("b.yaml"), "apiVersion: v1\nkind: [\n");
        assert!(
            d.problems[0].message.starts_with("document 1:"),
            "{}",
            d.problems[0]
        );
    }
}
