//! The HPA class on a cluster (`autoscaling.knative.dev/class: hpa.autoscaling.knative.dev`):
//! an `autoscaling/v2` HorizontalPodAutoscaler per Revision, as Knative's autoscaler-hpa makes
//! it (`pkg/reconciler/autoscaling/hpa/resources/hpa.go`), so Kubernetes scales the Revision's
//! Deployment on CPU or memory. Sluice's own autoscaler (the KPA) leaves such Revisions alone.
//!
//! - Name, namespace: the Revision's; labels: the Revision's Deployment's; owned by the
//!   Revision (collected with it).
//! - `scaleTargetRef`: the Revision's Deployment (`apps/v1`).
//! - `minReplicas` from `min-scale` when above 0 (an HPA never scales to zero); `maxReplicas`
//!   from `max-scale`, else `config-autoscaler`'s `max-scale`, else unbounded (2³¹−1).
//! - With a `target`: metric `cpu` → resource CPU at that average utilization (percent,
//!   rounded up); `memory` → resource memory at that average value in MiB. Without one, no
//!   metric: Kubernetes then scales at 80 % CPU. A custom metric is not supported (it needs a
//!   custom-metrics server): the Revision's annotations report it and it runs as `cpu`.
//! - `window` sets the scale-up and scale-down stabilization windows (`behavior`).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_autoscaler::{Config, HpaMetric, Policy, ScalingAnnotations};

use crate::kube::runtime::{deployment_name, revision_labels};
use crate::serving::Revision;
use crate::serving::configuration::controller_ref;

/// The HorizontalPodAutoscaler of an HPA-class Revision; `None` for another class.
pub fn revision_hpa(revision: &Revision, config: &Config) -> Option<HorizontalPodAutoscaler> {
    let annotations = revision.metadata.annotations.clone().unwrap_or_default();
    let (policy, _) = Policy::parse(&annotations, config);
    let hpa = policy.hpa?;
    let scaling = ScalingAnnotations::parse(&annotations, config).unwrap_or_default();
    let max = scaling
        .max_scale
        .filter(|m| *m > 0)
        .or((config.max_scale > 0).then_some(config.max_scale))
        .map_or(i32::MAX, |m| i32::try_from(m).unwrap_or(i32::MAX));
    let min = scaling
        .min_scale
        .filter(|m| *m > 0)
        .map(|m| i32::try_from(m).unwrap_or(i32::MAX).min(max));
    let metrics = scaling.target.map(|target| {
        let (name, target) = match hpa.metric {
            HpaMetric::Cpu => (
                "cpu",
                MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(target.ceil().min(f64::from(i32::MAX)) as i32),
                    ..MetricTarget::default()
                },
            ),
            HpaMetric::Memory => (
                "memory",
                MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(format!("{}Mi", target.ceil() as u64))),
                    ..MetricTarget::default()
                },
            ),
        };
        vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: name.into(),
                target,
            }),
            ..MetricSpec::default()
        }]
    });
    let behavior = scaling.window.map(|w| {
        let rules = HPAScalingRules {
            stabilization_window_seconds: Some(i32::try_from(w.as_secs()).unwrap_or(i32::MAX)),
            ..HPAScalingRules::default()
        };
        HorizontalPodAutoscalerBehavior {
            scale_down: Some(rules.clone()),
            scale_up: Some(rules),
        }
    });
    Some(HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(revision.name().to_string()),
            namespace: Some(revision.namespace().to_string()),
            labels: Some(revision_labels(revision)),
            owner_references: Some(vec![controller_ref("Revision", &revision.metadata)]),
            ..ObjectMeta::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: deployment_name(revision.name()),
            },
            min_replicas: min,
            max_replicas: max,
            metrics,
            behavior,
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(annotations: &[(&str, &str)]) -> Revision {
        let mut r = Revision::default();
        r.metadata.name = Some("hello-00001".into());
        r.metadata.namespace = Some("default".into());
        r.metadata.uid = Some("rev-uid".into());
        r.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        r
    }

    const CLASS: (&str, &str) = (
        "autoscaling.knative.dev/class",
        "hpa.autoscaling.knative.dev",
    );

    #[test]
    fn cpu_target_bounds_and_window_become_the_hpa() {
        let r = revision(&[
            CLASS,
            ("autoscaling.knative.dev/metric", "cpu"),
            ("autoscaling.knative.dev/target", "70"),
            ("autoscaling.knative.dev/min-scale", "2"),
            ("autoscaling.knative.dev/max-scale", "9"),
            ("autoscaling.knative.dev/window", "2m"),
        ]);
        let hpa = revision_hpa(&r, &Config::default()).expect("HPA class");
        let json = serde_json::to_value(&hpa).expect("json");
        assert_eq!(
            json["spec"],
            serde_json::json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": "hello-00001-deployment"},
                "minReplicas": 2, "maxReplicas": 9,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120},
                    "scaleUp": {"stabilizationWindowSeconds": 120}}
            })
        );
        assert_eq!(json["metadata"]["ownerReferences"][0]["kind"], "Revision");
        assert_eq!(
            json["metadata"]["labels"]["serving.knative.dev/revision"],
            "hello-00001"
        );
    }

    #[test]
    fn memory_in_mebibytes_and_no_target_leaves_kubernetes_default() {
        let r = revision(&[
            CLASS,
            ("autoscaling.knative.dev/metric", "memory"),
            ("autoscaling.knative.dev/target", "256"),
        ]);
        let hpa = revision_hpa(&r, &Config::default()).expect("HPA class");
        let metric = &hpa.spec.metrics.as_ref().expect("metrics")[0];
        let target = &metric.resource.as_ref().expect("resource").target;
        assert_eq!(target.average_value, Some(Quantity("256Mi".into())));
        assert_eq!(hpa.spec.min_replicas, None, "an HPA never goes below one");
        assert_eq!(hpa.spec.max_replicas, i32::MAX);

        let bare = revision_hpa(&revision(&[CLASS]), &Config::default()).expect("HPA class");
        assert_eq!(bare.spec.metrics, None, "Kubernetes' 80 % CPU");
        assert_eq!(bare.spec.behavior, None);
    }

    #[test]
    fn the_kpa_class_has_no_hpa() {
        assert!(revision_hpa(&revision(&[]), &Config::default()).is_none());
        let kpa = revision(&[(
            "autoscaling.knative.dev/class",
            "kpa.autoscaling.knative.dev",
        )]);
        assert!(revision_hpa(&kpa, &Config::default()).is_none());
    }
}
