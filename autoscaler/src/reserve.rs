//! Reserved instances (`knative.aliyun.com/reserve-instance: enable`, as the managed Knative
//! Sluice follows): cheaper instances that stay when a Revision would scale to zero, serve the
//! first request after idle while standard instances start, then hand over and stop.
//!
//! [`reserve_step`] is the last step of a decision: given the standard count the autoscaler
//! arrived at and what is running, it says how many standard and reserved instances to run
//! and whether the reserved ones are routed to. The rules:
//! * **Idle** (standard count 0, Revision reachable): the reserved floor runs instead. The
//!   last standard instance stays until a reserved instance is ready (make before break), so
//!   there is always something to answer.
//! * **Waking** (standard count > 0, no standard instance ready yet): the reserved instances
//!   that run keep serving; none is started.
//! * **Handed over** (a standard instance is ready): reserved instances get no new requests
//!   and stop once they hold none (the runtime's part).
//!
//! Reserved instances are never counted as ready capacity: the KPA sees standard instances
//! only, so the first request after idle still makes the Revision want a standard instance.

use std::collections::BTreeMap;

use crate::annotations::AnnotationError;
use crate::quantity;

/// `knative.aliyun.com/reserve-instance`: `enable` turns reserved instances on.
pub const RESERVE_INSTANCE: &str = "knative.aliyun.com/reserve-instance";
/// `knative.aliyun.com/reserve-instance-replicas`: how many (default 1).
pub const RESERVE_INSTANCE_REPLICAS: &str = "knative.aliyun.com/reserve-instance-replicas";
/// `knative.aliyun.com/reserve-instance-type`: the capacity type on that platform (shown).
pub const RESERVE_INSTANCE_TYPE: &str = "knative.aliyun.com/reserve-instance-type";
/// `sluice.knative.dev/reserve-instance-args`: a JSON list replacing the container's `args`.
pub const RESERVE_INSTANCE_ARGS: &str = "sluice.knative.dev/reserve-instance-args";
/// `sluice.knative.dev/reserve-instance-cpu`: the CPU request of a reserved pod (Kubernetes).
pub const RESERVE_INSTANCE_CPU: &str = "sluice.knative.dev/reserve-instance-cpu";
/// `sluice.knative.dev/reserve-instance-memory`: the memory request of a reserved pod
/// (Kubernetes).
pub const RESERVE_INSTANCE_MEMORY: &str = "sluice.knative.dev/reserve-instance-memory";

/// The most reserved instances one Revision may ask for.
pub const RESERVE_REPLICAS_MAX: u32 = 100;

/// A Revision's reserved-instance settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    /// How many reserved instances run at idle.
    pub replicas: u32,
    /// `reserve-instance-type`, as written.
    pub instance_type: Option<String>,
    /// Arguments replacing the container's `args` for reserved instances.
    pub args: Option<Vec<String>>,
    /// CPU request of a reserved pod, in millicores (Kubernetes only).
    pub cpu_millis: Option<u64>,
    /// Memory request of a reserved pod, in bytes (Kubernetes only).
    pub memory_bytes: Option<u64>,
}

impl Reserve {
    /// Reads the reserved-instance annotations. `None` when not enabled; invalid values are
    /// reported in `errors` and treated as absent (an invalid `reserve-instance` disables).
    pub fn parse(
        annotations: &BTreeMap<String, String>,
        errors: &mut Vec<AnnotationError>,
    ) -> Option<Reserve> {
        let get = |k: &str| annotations.get(k).map(String::as_str);
        let mut invalid = |key: &str, message: String| {
            errors.push(AnnotationError::Invalid {
                key: key.to_owned(),
                message,
            });
        };
        let enabled = match get(RESERVE_INSTANCE) {
            None | Some("disable") => false,
            Some("enable") => true,
            Some(other) => {
                invalid(
                    RESERVE_INSTANCE,
                    format!("{other:?} is neither \"enable\" nor \"disable\""),
                );
                false
            }
        };
        let replicas = match get(RESERVE_INSTANCE_REPLICAS) {
            None => 1,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=RESERVE_REPLICAS_MAX).contains(&n) => n,
                _ => {
                    invalid(
                        RESERVE_INSTANCE_REPLICAS,
                        format!("{raw:?} is not a whole number from 1 to {RESERVE_REPLICAS_MAX}"),
                    );
                    1
                }
            },
        };
        let args = get(RESERVE_INSTANCE_ARGS).and_then(|raw| {
            serde_json::from_str::<Vec<String>>(raw)
                .map_err(|e| {
                    invalid(
                        RESERVE_INSTANCE_ARGS,
                        format!("expected a JSON list of strings, e.g. [\"--heap=64m\"]: {e}"),
                    );
                })
                .ok()
        });
        let cpu_millis = get(RESERVE_INSTANCE_CPU).and_then(|raw| {
            quantity::millis(raw).filter(|m| *m > 0).or_else(|| {
                invalid(
                    RESERVE_INSTANCE_CPU,
                    format!("{raw:?} is not a positive CPU quantity (e.g. \"250m\", \"0.5\")"),
                );
                None
            })
        });
        let memory_bytes = get(RESERVE_INSTANCE_MEMORY).and_then(|raw| {
            quantity::units(raw).filter(|b| *b > 0).or_else(|| {
                invalid(
                    RESERVE_INSTANCE_MEMORY,
                    format!("{raw:?} is not a positive memory quantity (e.g. \"256Mi\", \"1G\")"),
                );
                None
            })
        });
        let instance_type = get(RESERVE_INSTANCE_TYPE)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        enabled.then_some(Reserve {
            replicas,
            instance_type,
            args,
            cpu_millis,
            memory_bytes,
        })
    }
}

/// What runs after the reserved-instance step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveVerdict {
    /// Standard instances to run.
    pub standard: u32,
    /// Reserved instances to run.
    pub reserved: u32,
    /// Whether the reserved instances get requests (else they finish what they hold and stop).
    pub serving: bool,
}

/// What the runtime reports for the reserved-instance step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Running {
    /// Standard instances asked for so far.
    pub standard_requested: u32,
    /// Ready standard instances.
    pub standard_ready: u32,
    /// Reserved instances running (ready or not).
    pub reserved_running: u32,
    /// Ready reserved instances.
    pub reserved_ready: u32,
}

/// The reserved-instance step: `floor` reserved instances (0 = none, or the Revision is not
/// reachable) given the `standard` count decided so far.
pub fn reserve_step(floor: u32, standard: u32, running: Running) -> ReserveVerdict {
    if floor == 0 {
        return ReserveVerdict {
            standard,
            reserved: 0,
            serving: false,
        };
    }
    if standard == 0 {
        // Idle: the floor instead of zero, made before the last standard instance breaks.
        let hold = running.standard_requested > 0
            && running.standard_ready > 0
            && running.reserved_ready == 0;
        return ReserveVerdict {
            standard: u32::from(hold),
            reserved: floor,
            serving: !hold,
        };
    }
    if running.standard_ready == 0 && running.reserved_running > 0 {
        // Waking: what runs keeps serving until a standard instance is ready.
        return ReserveVerdict {
            standard,
            reserved: running.reserved_running.min(floor),
            serving: true,
        };
    }
    ReserveVerdict {
        standard,
        reserved: 0,
        serving: false,
    }
}

#[cfg(test)]
mod tests;
