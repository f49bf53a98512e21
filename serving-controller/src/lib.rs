//! Knative Serving API types, reconcilers and the KIngress → Envoy translation (see DESIGN.md).
