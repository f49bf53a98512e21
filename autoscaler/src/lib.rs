//! The KPA autoscaler: decider, metric windows and the scaler trait (see DESIGN.md).
//!
//! This crate is the pure core of Knative's Pod Autoscaler, with the clock
//! injected (`tokio::time::Instant`) and no I/O:
//!
//! * [`Config`]: the cluster-wide `config-autoscaler` ConfigMap;
//! * [`ScalingAnnotations`] / [`RevisionScaling`]: a revision's
//!   `autoscaling.knative.dev/*` annotations and the effective spec they give
//!   with the config and `containerConcurrency`;
//! * [`AverageWindow`] / [`MaxWindow`]: 1 s bucket windows;
//! * [`Decider`]: stats in, desired scale, excess burst capacity and panic out;
//! * [`ActivatorPath`]: whether Envoy routes the revision through the
//!   activator, with hysteresis;
//! * [`ScaleToZero`]: when 0 may really remove the last instance (grace
//!   period, pod retention);
//! * [`Scaler`]: the trait runtimes implement to apply a scale;
//! * [`StatsIngest`]: the `sluice.autoscaler.v1.Stats` gRPC service the activators stream
//!   their figures (and pokes) to;
//! * [`envoy_sink::EnvoySink`]: Envoy's MetricsService stats sink, each revision's concurrency
//!   on the direct path summed over every gateway Envoy.
//!
//! Beyond the KPA (DESIGN.md, "Autoscaling beyond the KPA"), one [`RevisionAutoscaler`] per
//! Revision combines, in this order ([`combine`]): the reactive figure — the KPA's, or the
//! [`HpaDecider`]'s for the HPA class — raised to the [`Forecaster`]'s forecast for
//! predictive Revisions, the bounds of a [`ScaleSchedule`] window in force, the clamp, the
//! scale-to-zero rule, and at idle the [`Reserve`]d floor instead of zero
//! ([`reserve_step`]). The annotations of all four are read by [`Policy::parse`].
//!
//! A runtime's loop per revision, every 2 s and on a poke:
//!
//! ```
//! # use sluice_autoscaler::*;
//! # use std::collections::BTreeMap;
//! # use tokio::time::Instant;
//! let spec = RevisionScaling::resolve(&Config::default(), &BTreeMap::new(), 10).unwrap();
//! let now = Instant::now();
//! let mut decider = Decider::new(spec.clone(), now, 0);
//! let mut zero = ScaleToZero::new(&spec, now);
//! decider.record(now, Stat { concurrency: 14.0, requests: 30.0 });
//! let result = decider.scale(now, 1);
//! // program Envoy: result.activator_in_path; once it serves that, report back:
//! let envoy_routes_via_activator = result.activator_in_path;
//! if let Some(desired) = result.desired_scale() {
//!     let verdict = zero.decide(now, desired, 1, envoy_routes_via_activator);
//!     assert_eq!(verdict.scale, 2); // 14 in flight / (10 × 70 %)
//!     // scaler.scale(&key, verdict.scale).await
//! }
//! ```

mod annotations;
mod closer;
mod combine;
mod config;
mod decider;
mod duration;
pub mod envoy_sink;
pub mod hpa;
mod ingest;
mod path;
mod plan;
mod policy;
pub mod predict;
mod quantity;
pub mod reserve;
mod revision;
mod scaler;
pub mod schedule;
mod window;
mod zero;

pub use annotations::{
    ACTIVATION_SCALE, AnnotationError, AnnotationErrors, AnnotationKey, CLASS, INITIAL_SCALE,
    MAX_SCALE, METRIC, METRIC_AGGREGATION_ALGORITHM, MIN_SCALE, Metric, PANIC_THRESHOLD_PERCENTAGE,
    PANIC_WINDOW_PERCENTAGE, SCALE_DOWN_DELAY, SCALE_TO_ZERO_POD_RETENTION_PERIOD,
    ScalingAnnotations, TARGET, TARGET_BURST_CAPACITY, TARGET_UTILIZATION_PERCENTAGE, WINDOW,
};
pub use closer::StreamCloser;
pub use combine::{Bounds, Steps, combine};
pub use config::{
    BUCKET_SIZE, CONFIG_NAME, Config, ConfigError, HPA_CLASS, KEYS, KPA_CLASS,
    PANIC_THRESHOLD_PERCENTAGE_MAX, PANIC_THRESHOLD_PERCENTAGE_MIN, PANIC_WINDOW_PERCENTAGE_MAX,
    PANIC_WINDOW_PERCENTAGE_MIN, TARGET_MIN, WINDOW_MAX, WINDOW_MIN,
};
pub use decider::{Decider, ScaleResult, Stat};
pub use hpa::{HpaDecider, HpaMetric, HpaSpec, Usage};
pub use ingest::{Report, StatsIngest};
pub use path::ActivatorPath;
pub use plan::{Plan, PlanReason, RevisionAutoscaler};
pub use policy::{Policy, SCALE_BOUNDS, SCALE_BOUNDS_TIMEZONE};
pub use predict::{Forecast, Forecaster, History, Predictive};
pub use reserve::{Reserve, ReserveVerdict, Running, reserve_step};
pub use revision::RevisionScaling;
pub use scaler::{RevisionKey, ScaleError, Scaler};
pub use schedule::{ScaleSchedule, ScaleWindow, WindowInForce};
pub use window::{Aggregation, AverageWindow, MaxWindow};
pub use zero::{ScaleToZero, ZeroReason, ZeroVerdict};
