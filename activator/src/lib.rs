//! The activator: a per-revision throttling proxy for scale-from-zero (see DESIGN.md).
