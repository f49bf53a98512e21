//! The CustomResourceDefinitions the full profile installs, generated from our types:
//! `serving.knative.dev/v1` Service, Configuration, Revision and Route, and the
//! `networking.internal.knative.dev/v1alpha1` Ingress (KIngress) the gateway watches.
//!
//! Group, version and kind come from the types' own constants ([`Service::KIND`],
//! [`types::API_VERSION`], …); names, short names, categories and printer columns are
//! Knative's, so `kubectl get ksvc` reads as with Knative.
//!
//! **Schemas are not derived.** The types do not implement `schemars::JsonSchema` (schemars is
//! not a dependency), so each version's schema is structural but open: `apiVersion`, `kind`
//! and `metadata` typed, `spec` and `status` objects with
//! `x-kubernetes-preserve-unknown-fields: true`. The API server therefore stores any `spec`;
//! what Knative's webhook would reject (an unknown or misspelt field) is rejected when the
//! controller decodes the object, which sets a status condition naming the field — nothing is
//! silently misread. Committed as `deploy/full/100-crds.yaml`; a test renders these objects
//! and compares (`SLUICE_BLESS=1 cargo test -p sluice-serving --test kube_runtime crds`
//! rewrites it).

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresourceStatus,
    CustomResourceSubresources, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::ingress;
use crate::kube::resource::INGRESS_PLURAL;
use crate::serving::types::{self, Configuration, Revision, Route, Service};

/// Plural resource name of Knative Services.
pub const SERVICE_PLURAL: &str = "services";
/// Plural resource name of Configurations.
pub const CONFIGURATION_PLURAL: &str = "configurations";
/// Plural resource name of Revisions.
pub const REVISION_PLURAL: &str = "revisions";
/// Plural resource name of Routes.
pub const ROUTE_PLURAL: &str = "routes";

/// One CRD's identity: what differs between the five.
struct Definition {
    api_version: &'static str,
    kind: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    columns: &'static [(&'static str, &'static str)],
}

const READY: (&str, &str) = ("Ready", ".status.conditions[?(@.type=='Ready')].status");
const REASON: (&str, &str) = ("Reason", ".status.conditions[?(@.type=='Ready')].reason");
const SERVING_CATEGORIES: &[&str] = &["all", "knative", "serving"];

fn definitions() -> [Definition; 5] {
    [
        Definition {
            api_version: types::API_VERSION,
            kind: Service::KIND,
            plural: SERVICE_PLURAL,
            short_names: &["kservice", "ksvc"],
            categories: SERVING_CATEGORIES,
            columns: &[
                ("URL", ".status.url"),
                ("LatestCreated", ".status.latestCreatedRevisionName"),
                ("LatestReady", ".status.latestReadyRevisionName"),
                READY,
                REASON,
            ],
        },
        Definition {
            api_version: types::API_VERSION,
            kind: Configuration::KIND,
            plural: CONFIGURATION_PLURAL,
            short_names: &["config", "cfg"],
            categories: SERVING_CATEGORIES,
            columns: &[
                ("LatestCreated", ".status.latestCreatedRevisionName"),
                ("LatestReady", ".status.latestReadyRevisionName"),
                READY,
                REASON,
            ],
        },
        Definition {
            api_version: types::API_VERSION,
            kind: Revision::KIND,
            plural: REVISION_PLURAL,
            short_names: &["rev"],
            categories: SERVING_CATEGORIES,
            columns: &[
                (
                    "Config Name",
                    ".metadata.labels['serving\\.knative\\.dev/configuration']",
                ),
                (
                    "Generation",
                    ".metadata.labels['serving\\.knative\\.dev/configurationGeneration']",
                ),
                READY,
                REASON,
            ],
        },
        Definition {
            api_version: types::API_VERSION,
            kind: Route::KIND,
            plural: ROUTE_PLURAL,
            short_names: &["rt"],
            categories: SERVING_CATEGORIES,
            columns: &[("URL", ".status.url"), READY, REASON],
        },
        Definition {
            api_version: ingress::API_VERSION,
            kind: ingress::KIND,
            plural: INGRESS_PLURAL,
            short_names: &["kingress", "king"],
            categories: &["knative-internal", "networking"],
            columns: &[READY, REASON],
        },
    ]
}

/// The five CRDs, in the order they are committed: Service, Configuration, Revision, Route,
/// then the KIngress.
pub fn custom_resource_definitions() -> Vec<CustomResourceDefinition> {
    definitions().iter().map(crd).collect()
}

fn crd(d: &Definition) -> CustomResourceDefinition {
    let (group, version) = d.api_version.split_once('/').unwrap_or(("", d.api_version));
    let strings = |items: &[&str]| Some(items.iter().map(|s| s.to_string()).collect());
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("{}.{group}", d.plural)),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "sluice".to_string()),
                ("knative.dev/crd-install".to_string(), "true".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: group.to_string(),
            names: CustomResourceDefinitionNames {
                kind: d.kind.to_string(),
                list_kind: Some(format!("{}List", d.kind)),
                plural: d.plural.to_string(),
                singular: Some(d.kind.to_lowercase()),
                short_names: strings(d.short_names),
                categories: strings(d.categories),
            },
            scope: "Namespaced".to_string(),
            versions: vec![CustomResourceDefinitionVersion {
                name: version.to_string(),
                served: true,
                storage: true,
                schema: Some(CustomResourceValidation {
                    open_api_v3_schema: Some(schema(d.kind)),
                }),
                subresources: Some(CustomResourceSubresources {
                    status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                    scale: None,
                }),
                additional_printer_columns: Some(
                    d.columns
                        .iter()
                        .map(|(name, path)| CustomResourceColumnDefinition {
                            name: name.to_string(),
                            type_: "string".to_string(),
                            json_path: path.to_string(),
                            ..CustomResourceColumnDefinition::default()
                        })
                        .collect(),
                ),
                ..CustomResourceDefinitionVersion::default()
            }],
            ..CustomResourceDefinitionSpec::default()
        },
        status: None,
    }
}

/// Structural and open: see the module docs.
fn schema(kind: &str) -> JSONSchemaProps {
    let typed = |type_: &str, description: &str| JSONSchemaProps {
        type_: Some(type_.to_string()),
        description: Some(description.to_string()),
        ..JSONSchemaProps::default()
    };
    let open = |description: String| JSONSchemaProps {
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..typed("object", &description)
    };
    JSONSchemaProps {
        type_: Some("object".to_string()),
        properties: Some(BTreeMap::from([
            (
                "apiVersion".to_string(),
                typed("string", "The API version."),
            ),
            ("kind".to_string(), typed("string", "The kind.")),
            (
                "metadata".to_string(),
                typed("object", "Standard object metadata."),
            ),
            (
                "spec".to_string(),
                open(format!(
                    "The desired state of the {kind}: checked when Sluice decodes it (unknown fields are rejected there, as by Knative's webhook)."
                )),
            ),
            (
                "status".to_string(),
                open(format!(
                    "The observed state of the {kind}, written by Sluice."
                )),
            ),
        ])),
        ..JSONSchemaProps::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_namespaced_crd_per_kind_with_status_and_open_spec() {
        let crds = custom_resource_definitions();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "services.serving.knative.dev",
                "configurations.serving.knative.dev",
                "revisions.serving.knative.dev",
                "routes.serving.knative.dev",
                "ingresses.networking.internal.knative.dev",
            ]
        );
        for crd in &crds {
            assert_eq!(crd.spec.scope, "Namespaced");
            let [version] = crd.spec.versions.as_slice() else {
                panic!("one version");
            };
            assert!(version.served && version.storage);
            assert!(
                version
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some())
            );
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema");
            let properties = schema.properties.as_ref().expect("properties");
            for open in ["spec", "status"] {
                assert_eq!(
                    properties[open].x_kubernetes_preserve_unknown_fields,
                    Some(true),
                    "{open}"
                );
            }
        }
        let ksvc = &crds[0].spec;
        assert_eq!(ksvc.group, "serving.knative.dev");
        assert_eq!(ksvc.versions[0].name, "v1");
        assert_eq!(ksvc.names.kind, "Service");
        assert_eq!(ksvc.names.list_kind.as_deref(), Some("ServiceList"));
        assert_eq!(ksvc.names.singular.as_deref(), Some("service"));
        assert!(ksvc.names.short_names.iter().flatten().any(|s| s == "ksvc"));
        let kingress = &crds[4].spec;
        assert_eq!(kingress.group, "networking.internal.knative.dev");
        assert_eq!(kingress.versions[0].name, "v1alpha1");
        assert_eq!(kingress.names.kind, "Ingress");
    }
}
