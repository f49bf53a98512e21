//! The API access the controller needs besides the runtime's, mirrored by
//! `deploy/full/200-rbac.yaml` (`serving-controller/tests/kube_runtime.rs` compares them).

use crate::kube::rbac::Permission;

/// Everything the controller does besides [`KubeRuntime`]'s writes (see
/// [`RUNTIME_PERMISSIONS`](crate::kube::runtime::RUNTIME_PERMISSIONS)).
///
/// Watches are `list` + `watch`; server-side applies are `patch` (plus `create` for the first
/// apply of an object); Revisions are created (`create`), labelled with their routing state
/// (`patch`) and collected (`delete`); a Revision's Deployment is read once
/// (`get`) before it is run, for its current replica count. Every object the controller (or
/// its runtime) writes has a `blockOwnerDeletion` owner reference to a serving object; where the
/// `OwnerReferencesPermissionEnforcement` admission plugin is on, that needs `update` on the
/// owner's `finalizers` subresource.
pub const CONTROLLER_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "serving.knative.dev",
        resource: "services",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "configurations",
        verbs: &["list", "watch", "create", "patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "revisions",
        verbs: &["list", "watch", "create", "patch", "delete"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "routes",
        verbs: &["list", "watch", "create", "patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "services/status",
        verbs: &["patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "configurations/status",
        verbs: &["patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "revisions/status",
        verbs: &["patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "routes/status",
        verbs: &["patch"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "services/finalizers",
        verbs: &["update"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "configurations/finalizers",
        verbs: &["update"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "revisions/finalizers",
        verbs: &["update"],
    },
    Permission {
        group: "serving.knative.dev",
        resource: "routes/finalizers",
        verbs: &["update"],
    },
    Permission {
        group: "networking.internal.knative.dev",
        resource: "ingresses",
        verbs: &["list", "watch", "create", "patch"],
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch"],
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "autoscaling",
        resource: "horizontalpodautoscalers",
        verbs: &["create", "patch"],
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create"],
    },
];

/// What the controller does in `knative-serving` only (a Role there, not a ClusterRole):
/// watching the `config-*` ConfigMaps, and electing its leader on the Lease
/// `sluice-controller` ([`LEASE_PERMISSIONS`](crate::kube::lease::LEASE_PERMISSIONS)).
pub const CONTROLLER_SYSTEM_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
    },
];

/// What `sluice autoscaler --kube` does cluster-wide (the `sluice-autoscaler` ClusterRole in
/// `deploy/full/500-autoscaler.yaml`): watching Revisions (annotations, routing state) and
/// their Deployments (replicas wanted and ready), scaling those through the `scale`
/// subresource, and reading the private Services' and the activator's EndpointSlices to write
/// each public Service's.
pub const AUTOSCALER_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "serving.knative.dev",
        resource: "revisions",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "apps",
        resource: "deployments",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "apps",
        resource: "deployments/scale",
        verbs: &["patch"],
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch", "create", "patch"],
    },
];

/// What `sluice activator --kube` does (the `sluice-activator` ClusterRole in
/// `deploy/full/600-activator.yaml`): watching Revisions (`containerConcurrency`, timeout,
/// h2c) and the EndpointSlices of their private Services (the pods).
pub const ACTIVATOR_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "serving.knative.dev",
        resource: "revisions",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
];

/// What `sluice autoscaler --kube` does in `knative-serving` only (a Role there): watching
/// `config-autoscaler`, and electing its leader on the Lease `sluice-autoscaler`.
pub const AUTOSCALER_SYSTEM_PERMISSIONS: &[Permission] = &[
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_role_carries_the_lease_permissions() {
        for lease in crate::kube::lease::LEASE_PERMISSIONS {
            assert!(CONTROLLER_SYSTEM_PERMISSIONS.contains(lease), "{lease:?}");
        }
    }
}
