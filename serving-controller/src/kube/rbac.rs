//! The API access the Kubernetes source and status writer need — no more. The ClusterRole in
//! `deploy/ingress/` grants exactly this (a test compares them), so a new watch or write here
//! must come with its rule there.

/// One RBAC rule: these verbs on this resource of this API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource, or `resource/subresource`.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

/// Everything [`super::KubeSource`], [`super::patch_status`] and [`super::EventPublisher`] do.
///
/// Watches are `list` + `watch` (kube-runtime's watcher never issues a single-object `get`);
/// the status is written with a server-side apply, which is a `patch`; events are only created.
/// Endpoints are not read (see [`super::KubeCache`]).
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "networking.internal.knative.dev",
        resource: "ingresses",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "networking.internal.knative.dev",
        resource: "ingresses/status",
        verbs: &["patch"],
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    Permission {
        group: "",
        resource: "secrets",
        // `get`: a Secret a KIngress starts to name is fetched (only named ones are kept).
        verbs: &["get", "list", "watch"],
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create"],
    },
];

/// What the gateway reads in Knative's system namespace (`knative-serving`) only: its
/// ConfigMaps (`config-kourier`, `config-network`). Granted by a Role there, not cluster-wide.
pub const SYSTEM_NAMESPACE_PERMISSIONS: &[Permission] = &[Permission {
    group: "",
    resource: "configmaps",
    verbs: &["list", "watch"],
}];
