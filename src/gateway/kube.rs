//! `sluice gateway --kube`: the cluster as the gateway's source, and KIngress status written
//! back.
//!
//! - [`KubeInputs`] drives serving-controller's [`KubeSource`] (watches on KIngresses of our
//!   class, Services, EndpointSlices and Secrets) and turns its [`KubeEvent`]s into the same
//!   [`Input`]s the directory source produces ([`input_of`]), batched, with
//!   [`Input::Synced`] once every watch has listed: the core translates and publishes only from
//!   there ("do not serve before you know").
//! - [`StatusReporter`] follows each KIngress's readiness as the core knows it
//!   ([`readiness_of`]: translated, proven by ACK + probe, failed, or losing a host) and writes
//!   it to the KIngress's status whenever it changes, one request in flight per KIngress (so an
//!   older state never lands after a newer one), with backoff on failures. Failures also become
//!   Warning events (`kubectl describe kingress`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::Client;
use ::kube::runtime::controller::Action;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_serving::Ingress;
use sluice_serving::conflict::DOMAIN_CONFLICT;
use sluice_serving::ingress::IngressKey;
use sluice_serving::kube::{
    EventPublisher, EventType, KubeError, KubeEvent, KubeSource, LoadBalancers, PatchOutcome,
    Readiness, SourceConfig, StatusWriter, error_policy,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::documents::{Kind, Object, ObjectKey, Problem};
use super::source::Input;
use super::state::{GatewayState, IngressState};
use super::{Rejected, Shared};

/// What problems from the cluster name as their "file".
pub const ORIGIN: &str = "kube";

/// Reason written for a KIngress the API server holds but Sluice cannot read.
pub const REASON_INVALID: &str = "InvalidIngress";

/// Most events turned into one batch (one translation + publish) when they arrive together.
const MAX_BATCH: usize = 1024;

/// The key the gateway state uses for an object of `kind` with metadata `meta`.
fn key(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// One [`KubeEvent`] as gateway input: the change the directory source would produce for the
/// same object (EndpointSlices keyed by their own namespace/name), a rejection, or the end of
/// the initial fill.
pub fn input_of(event: KubeEvent) -> Input {
    fn applied<T: Clone>(
        kind: Kind,
        object: Arc<T>,
        meta: fn(&T) -> &ObjectMeta,
        wrap: fn(Box<T>) -> Object,
    ) -> Input {
        let k = key(kind, meta(&object));
        Input::Change((k, Some(wrap(Box::new(Arc::unwrap_or_clone(object))))))
    }
    match event {
        KubeEvent::Synced => Input::Synced,
        KubeEvent::IngressApplied(i) => applied(Kind::Ingress, i, |i| &i.metadata, Object::Ingress),
        KubeEvent::IngressDeleted(k) => Input::Change((
            ObjectKey {
                kind: Kind::Ingress,
                namespace: k.namespace,
                name: k.name,
            },
            None,
        )),
        KubeEvent::IngressRejected { ingress, error } => Input::Rejected {
            ingress: Box::new(Arc::unwrap_or_clone(ingress)),
            message: error.to_string(),
        },
        KubeEvent::ServiceApplied(s) => applied(Kind::Service, s, |s| &s.metadata, Object::Service),
        KubeEvent::ServiceDeleted(s) => Input::Change((key(Kind::Service, &s.metadata), None)),
        KubeEvent::EndpointSliceApplied(s) => applied(
            Kind::EndpointSlice,
            s,
            |s| &s.metadata,
            Object::EndpointSlice,
        ),
        KubeEvent::EndpointSliceDeleted(s) => {
            Input::Change((key(Kind::EndpointSlice, &s.metadata), None))
        }
        KubeEvent::SecretApplied(s) => applied(Kind::Secret, s, |s| &s.metadata, Object::Secret),
        KubeEvent::SecretDeleted(s) => Input::Change((key(Kind::Secret, &s.metadata), None)),
        KubeEvent::ConfigMapApplied(c) => {
            applied(Kind::ConfigMap, c, |c| &c.metadata, Object::ConfigMap)
        }
        KubeEvent::ConfigMapDeleted(c) => Input::Change((key(Kind::ConfigMap, &c.metadata), None)),
    }
}

/// The status to write for a KIngress in state `st`, `proven` being the hash last proven
/// served (ACK + probe) for it:
/// - a host lost to an earlier KIngress: `LoadBalancerFailed` / `DomainConflict`;
/// - the current spec cannot be translated (invalid, a missing Service, port or Secret):
///   `NotConfigured` with the reason and message (the previous translation, if any, keeps
///   serving, but this generation is not);
/// - the served hash proven: `Ready`;
/// - otherwise: `InProgress` (`Uninitialized`, waiting for Envoy). The message is fixed, so
///   the probe's retries do not rewrite the status; `/status` says what is awaited.
pub fn readiness_of(st: &IngressState, proven: Option<&String>) -> Readiness {
    match (&st.error, st.reason.as_deref()) {
        (Some(message), Some(DOMAIN_CONFLICT)) => Readiness::LoadBalancerFailed {
            reason: DOMAIN_CONFLICT.to_string(),
            message: message.clone(),
        },
        (Some(message), reason) => Readiness::NotConfigured {
            reason: reason.unwrap_or("TranslationFailed").to_string(),
            message: message.clone(),
        },
        (None, _) if st.served_hash.is_some() && st.served_hash.as_ref() == proven => {
            Readiness::Ready
        }
        (None, _) => Readiness::waiting(),
    }
}

/// The status to write for a KIngress the API server holds in a form Sluice cannot read.
pub fn rejected_readiness(rejected: &Rejected) -> Readiness {
    Readiness::NotConfigured {
        reason: REASON_INVALID.to_string(),
        message: rejected.message.clone(),
    }
}

impl KubeInputs {
    /// `config-kourier` changed: keep the Secrets of its default certificates (a bad value is
    /// reported by the gateway core; here it names nothing new).
    fn follow_config(&mut self, c: &k8s_openapi::api::core::v1::ConfigMap) {
        use sluice_serving::kourier;
        if c.metadata.name.as_deref() != Some(kourier::CONFIG_KOURIER)
            || c.metadata.namespace.as_deref() != Some(kourier::SYSTEM_NAMESPACE)
        {
            return;
        }
        let data = c.data.clone().unwrap_or_default();
        let Ok((config, _)) = kourier::parse(
            &data,
            &crate::gateway::kourier_env(),
            kourier::SYSTEM_NAMESPACE,
        ) else {
            return;
        };
        self.source
            .name_config_secrets(config_secrets(Some(&config)));
    }
}

/// The Secrets the gateway's own configuration names: `config-kourier`'s default certificates
/// and the CA of Knative's system-internal-tls (kept whole whether or not it is on: one
/// Secret, and turning it on then needs no new watch).
fn config_secrets(
    config: Option<&sluice_serving::kourier::KourierConfig>,
) -> Vec<sluice_serving::IngressKey> {
    use sluice_serving::kourier::SYSTEM_NAMESPACE;
    use sluice_serving::translate::internal_tls::ROUTING_CA_SECRET;
    config
        .into_iter()
        .flat_map(|c| [c.default_cert.clone(), c.cluster_cert_secret.clone()])
        .flatten()
        .map(|s| sluice_serving::IngressKey::new(&s.namespace, &s.name))
        .chain([sluice_serving::IngressKey::new(
            SYSTEM_NAMESPACE,
            ROUTING_CA_SECRET,
        )])
        .collect()
}

/// The label Knative puts on the Secrets of the certificates it manages.
pub const CERTIFICATE_UID_LABEL: &str = "networking.internal.knative.dev/certificate-uid";

/// The cluster as a source of [`Input`]s.
pub struct KubeInputs {
    source: KubeSource,
    /// Watch failures before the first sync (RBAC, missing CRDs, an unreachable API server),
    /// by resource: shown in `/status` until synced. Later failures are only logged (the
    /// watches retry by themselves and the cache keeps serving).
    unsynced_errors: BTreeMap<String, String>,
}

impl std::fmt::Debug for KubeInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeInputs")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl KubeInputs {
    /// Starts watching the whole cluster (a KIngress may name Services and Secrets in any
    /// namespace). With `certificate_uid_only`, only Secrets labelled
    /// [`CERTIFICATE_UID_LABEL`] are watched (net-kourier's opt-in filter: Knative's
    /// certificate controller labels the Secrets it makes).
    pub fn new(client: Client, certificate_uid_only: bool) -> Self {
        let mut config = SourceConfig::default();
        if certificate_uid_only {
            config.secrets = sluice_serving::kube::Scope::all().with_labels(CERTIFICATE_UID_LABEL);
        }
        let mut source = KubeSource::new(client, &config);
        // The CA of system-internal-tls, should config-network turn it on.
        source.name_config_secrets(config_secrets(None));
        Self {
            source,
            unsynced_errors: BTreeMap::new(),
        }
    }

    /// The next inputs: everything that arrived together (up to a bound), so that a burst (a
    /// re-list, a rollout's EndpointSlices) is translated and published once. An empty batch
    /// when a watch failed (problems changed). Cancel-safe.
    pub async fn next(&mut self) -> Option<Vec<Input>> {
        let first = self.source.next().await?;
        let mut inputs = Vec::new();
        self.take(first, &mut inputs);
        while inputs.len() < MAX_BATCH {
            match self.source.next().now_or_never() {
                Some(Some(item)) => self.take(item, &mut inputs),
                _ => break,
            }
        }
        Some(inputs)
    }

    fn take(&mut self, item: Result<KubeEvent, KubeError>, inputs: &mut Vec<Input>) {
        match item {
            Ok(KubeEvent::Synced) => {
                self.unsynced_errors.clear();
                inputs.push(Input::Synced);
            }
            Ok(event) => {
                if let KubeEvent::ConfigMapApplied(c) = &event {
                    self.follow_config(c);
                }
                inputs.push(input_of(event))
            }
            Err(error) => {
                tracing::warn!(%error, "kube source (the watch retries by itself)");
                if !self.source.is_synced() {
                    let resource = match &error {
                        KubeError::Watch { resource, .. } => (*resource).to_string(),
                        _ => ORIGIN.to_string(),
                    };
                    self.unsynced_errors.insert(resource, error.to_string());
                }
            }
        }
    }

    /// Every problem: watches not synced yet, KIngresses that cannot be read, and KIngresses
    /// whose spec cannot be translated.
    pub fn problems(
        &self,
        state: &GatewayState,
        rejected: &BTreeMap<IngressKey, Rejected>,
    ) -> Vec<Problem> {
        problems_of(&self.unsynced_errors, state, rejected)
    }
}

/// Every problem of the cluster source: watches not synced yet (by resource), KIngresses that
/// cannot be read, and KIngresses whose spec cannot be translated (a host lost to another
/// KIngress is not a problem of the input; its status says why).
fn problems_of(
    unsynced_errors: &BTreeMap<String, String>,
    state: &GatewayState,
    rejected: &BTreeMap<IngressKey, Rejected>,
) -> Vec<Problem> {
    let origin = PathBuf::from(ORIGIN);
    let mut problems: Vec<Problem> = unsynced_errors
        .iter()
        .map(|(resource, message)| Problem {
            file: origin.clone(),
            object: Some(resource.clone()),
            field: None,
            message: format!("not synced yet: {message}"),
        })
        .collect();
    let object = |k: &IngressKey| {
        ObjectKey {
            kind: Kind::Ingress,
            namespace: k.namespace.clone(),
            name: k.name.clone(),
        }
        .to_string()
    };
    problems.extend(rejected.iter().map(|(k, r)| Problem {
        file: origin.clone(),
        object: Some(object(k)),
        field: None,
        message: format!("{} (the previous version keeps serving)", r.message),
    }));
    for (k, st) in state.failing() {
        let (Some(message), Some(reason)) = (&st.error, &st.reason) else {
            continue;
        };
        if reason == DOMAIN_CONFLICT || rejected.contains_key(k) {
            continue;
        }
        problems.push(Problem {
            file: origin.clone(),
            object: Some(object(k)),
            field: st.error_field.clone(),
            message: message.clone(),
        });
    }
    problems
}

/// What was last written (or found already shown) for one KIngress.
type Written = (Option<i64>, Readiness);

/// One status write to make.
struct Write {
    key: IngressKey,
    ingress: Ingress,
    readiness: Readiness,
}

/// A finished write: the KIngress, what was written, and how it went.
type Done = (IngressKey, Written, Result<PatchOutcome, KubeError>);

/// Writes KIngress status (and Warning events) as readiness changes.
pub struct StatusReporter {
    writer: StatusWriter,
    events: Arc<EventPublisher>,
    written: HashMap<IngressKey, Written>,
    in_flight: HashSet<IngressKey>,
    /// Failed writes: attempts so far and when to try again.
    retry: HashMap<IngressKey, (u32, Instant)>,
    /// Whether this replica leads (only the leader writes); always, without an election.
    leader: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for StatusReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusReporter")
            .field("writer", &self.writer)
            .field("written", &self.written.len())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl StatusReporter {
    /// A reporter naming `load_balancers` in every status and `instance` in its events.
    pub fn new(client: Client, load_balancers: LoadBalancers, instance: String) -> Self {
        Self {
            writer: StatusWriter::new(client.clone(), load_balancers),
            events: Arc::new(EventPublisher::new(client, instance)),
            written: HashMap::new(),
            in_flight: HashSet::new(),
            retry: HashMap::new(),
            leader: None,
        }
    }

    /// Writes only while `leader` says this replica leads. On becoming leader it writes
    /// whatever differs from what it last wrote itself (another leader may have written since,
    /// so it forgets that too).
    pub fn with_leader(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    fn leads(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Runs until `stop`: re-derives every KIngress's readiness when `changed` is notified (or
    /// a write finished, or a retry is due) and writes the ones that differ from what was
    /// last written.
    pub(super) async fn run(
        mut self,
        shared: Arc<Mutex<Shared>>,
        changed: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut leader = self.leader.clone();
        loop {
            let next_retry = self
                .retry
                .iter()
                .filter(|(k, _)| !self.in_flight.contains(*k))
                .map(|(_, (_, at))| *at)
                .min();
            tokio::select! {
                _ = changed.notified() => {}
                Some(done) = done_rx.recv() => self.finished(done),
                _ = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)), if next_retry.is_some() => {}
                Ok(()) = async { match leader.as_mut() { Some(l) => l.changed().await.map_err(|_| ()), None => std::future::pending().await } } => {
                    let leads = self.leads();
                    tracing::info!(leader = leads, "status writer: {}", if leads { "this replica leads: writing KIngress status" } else { "another replica leads: not writing" });
                    // What another leader wrote meanwhile is unknown: compare afresh.
                    self.written.clear();
                    self.retry.clear();
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            while let Ok(done) = done_rx.try_recv() {
                self.finished(done);
            }
            if !self.leads() {
                continue;
            }
            let writes = {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                self.due(&s)
            };
            for w in writes {
                self.in_flight.insert(w.key.clone());
                let writer = self.writer.clone();
                let events = self.events.clone();
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let result = writer.update(&w.ingress, &w.readiness).await;
                    if result.is_ok() {
                        warn_event(&events, &w.ingress, &w.readiness).await;
                    }
                    let written = (w.ingress.metadata.generation, w.readiness);
                    let _ = done.send((w.key, written, result));
                });
            }
        }
    }

    /// The writes due now: KIngresses whose readiness differs from what was last written, not
    /// already being written, and not waiting for a retry. Forgets deleted KIngresses.
    fn due(&mut self, s: &Shared) -> Vec<Write> {
        let now = Instant::now();
        let mut wanted: Vec<(&IngressKey, &Ingress, Readiness)> = Vec::new();
        for (k, st) in s.state.ingresses() {
            if !s.rejected.contains_key(k) {
                wanted.push((k, &st.ingress, readiness_of(st, s.readiness.proven.get(k))));
            }
        }
        for (k, r) in &s.rejected {
            wanted.push((k, &r.ingress, rejected_readiness(r)));
        }
        let present: HashSet<&IngressKey> = wanted.iter().map(|(k, _, _)| *k).collect();
        let gone: Vec<IngressKey> = self
            .written
            .keys()
            .chain(self.retry.keys())
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.written.remove(&k);
            self.retry.remove(&k);
            self.events.forget(&k);
        }
        let mut writes = Vec::new();
        for (k, ingress, readiness) in wanted {
            let current = (ingress.metadata.generation, readiness);
            if self.written.get(k) == Some(&current) {
                // Back where it was: nothing to retry.
                self.retry.remove(k);
                continue;
            }
            if self.in_flight.contains(k) || self.retry.get(k).is_some_and(|(_, at)| *at > now) {
                continue;
            }
            writes.push(Write {
                key: k.clone(),
                ingress: ingress.clone(),
                readiness: current.1,
            });
        }
        writes
    }

    fn finished(&mut self, (key, written, result): Done) {
        self.in_flight.remove(&key);
        match result {
            Ok(outcome) => {
                tracing::debug!(ingress = %key, readiness = ?written.1, ?outcome, "KIngress status");
                self.retry.remove(&key);
                self.written.insert(key, written);
            }
            Err(error) => {
                let attempts = self.retry.get(&key).map_or(0, |(n, _)| *n);
                if error_policy(&error, attempts) == Action::await_change() {
                    // Retrying the same write cannot help (the object is gone, or refused
                    // it): wait until its state changes.
                    tracing::warn!(ingress = %key, %error, "KIngress status not written");
                    self.retry.remove(&key);
                    self.written.insert(key, written);
                } else {
                    let delay = backoff(attempts);
                    tracing::warn!(ingress = %key, %error, retry_in = ?delay, "KIngress status not written");
                    self.retry
                        .insert(key, (attempts + 1, Instant::now() + delay));
                }
            }
        }
    }
}

/// 0.5 s doubling per attempt, capped at 60 s (as serving-controller's `error_policy`).
fn backoff(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX);
    Duration::from_millis(500)
        .saturating_mul(factor)
        .min(Duration::from_secs(60))
}

/// A Warning event for a KIngress that is not served, so that `kubectl describe` says why
/// (repeats are suppressed by the publisher); a Ready one clears the memory of its last event.
async fn warn_event(events: &EventPublisher, ingress: &Ingress, readiness: &Readiness) {
    let (action, reason, message) = match readiness {
        Readiness::NotConfigured { reason, message } => ("Translate", reason, message),
        Readiness::LoadBalancerFailed { reason, message } => ("Serve", reason, message),
        Readiness::Ready => {
            events.forget(&ingress.key());
            return;
        }
        Readiness::InProgress { .. } => return,
    };
    if let Err(error) = events
        .publish(ingress, EventType::Warning, action, reason, message)
        .await
    {
        tracing::warn!(ingress = %ingress.key(), %error, "event not published");
    }
}

/// This gateway's name in the events it publishes: `--instance`, else `$POD_NAME`, else
/// `$HOSTNAME` (the pod name in a pod), else the kernel's host name, else `sluice-gateway`.
pub fn instance_name(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> String {
    flag.or_else(|| env("POD_NAME"))
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "sluice-gateway".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use sluice_serving::ingress::{INGRESS_CLASS_ANNOTATION, SLUICE_INGRESS_CLASS};

    fn meta(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn ingress(name: &str) -> Ingress {
        let mut i = Ingress {
            metadata: meta("web", name),
            ..Ingress::default()
        };
        i.metadata.annotations = Some(
            [(
                INGRESS_CLASS_ANNOTATION.to_string(),
                SLUICE_INGRESS_CLASS.to_string(),
            )]
            .into(),
        );
        i
    }

    fn change(input: Input) -> (String, Option<Object>) {
        match input {
            Input::Change((k, o)) => (k.to_string(), o),
            other => panic!("not a change: {other:?}"),
        }
    }

    #[test]
    fn events_become_the_changes_the_file_source_would_make() {
        let i = ingress("hello");
        let (k, o) = change(input_of(KubeEvent::IngressApplied(Arc::new(i.clone()))));
        assert_eq!(k, "Ingress web/hello");
        assert_eq!(o, Some(Object::Ingress(Box::new(i))));
        let (k, o) = change(input_of(KubeEvent::IngressDeleted(IngressKey::new(
            "web", "hello",
        ))));
        assert_eq!((k.as_str(), o), ("Ingress web/hello", None));

        let svc = Service {
            metadata: meta("web", "hello"),
            ..Service::default()
        };
        let (k, o) = change(input_of(KubeEvent::ServiceApplied(Arc::new(svc.clone()))));
        assert_eq!(k, "Service web/hello");
        assert_eq!(o, Some(Object::Service(Box::new(svc.clone()))));
        let (k, o) = change(input_of(KubeEvent::ServiceDeleted(Arc::new(svc))));
        assert_eq!((k.as_str(), o), ("Service web/hello", None));

        // A slice is keyed by its own name, not its Service's (several slices per Service).
        let mut slice_meta = meta("web", "hello-abc12");
        slice_meta.labels = Some(
            [(
                "kubernetes.io/service-name".to_string(),
                "hello".to_string(),
            )]
            .into(),
        );
        let slice = EndpointSlice {
            metadata: slice_meta,
            ..EndpointSlice::default()
        };
        let (k, o) = change(input_of(KubeEvent::EndpointSliceApplied(Arc::new(
            slice.clone(),
        ))));
        assert_eq!(k, "EndpointSlice web/hello-abc12");
        assert_eq!(o, Some(Object::EndpointSlice(Box::new(slice.clone()))));
        let (k, o) = change(input_of(KubeEvent::EndpointSliceDeleted(Arc::new(slice))));
        assert_eq!((k.as_str(), o), ("EndpointSlice web/hello-abc12", None));

        let secret = Secret {
            metadata: meta("certs", "tls"),
            ..Secret::default()
        };
        let (k, o) = change(input_of(KubeEvent::SecretApplied(Arc::new(secret.clone()))));
        assert_eq!(k, "Secret certs/tls");
        assert_eq!(o, Some(Object::Secret(Box::new(secret.clone()))));
        let (k, o) = change(input_of(KubeEvent::SecretDeleted(Arc::new(secret))));
        assert_eq!((k.as_str(), o), ("Secret certs/tls", None));

        assert_eq!(input_of(KubeEvent::Synced), Input::Synced);
    }

    #[test]
    fn a_rejected_ingress_is_reported_not_applied() {
        let stub = ingress("broken");
        let error = KubeError::Decode {
            ingress: stub.key(),
            field: "spec.rules".into(),
            source: serde_json::from_str::<u8>("\"x\"").unwrap_err(),
        };
        let message = error.to_string();
        let Input::Rejected {
            ingress,
            message: m,
        } = input_of(KubeEvent::IngressRejected {
            ingress: Arc::new(stub.clone()),
            error,
        })
        else {
            panic!("not a rejection")
        };
        assert_eq!(*ingress, stub);
        assert_eq!(m, message);
        assert!(m.contains("web/broken"), "{m}");
        let r = Rejected {
            ingress: *ingress,
            message: m.clone(),
        };
        assert_eq!(
            rejected_readiness(&r),
            Readiness::NotConfigured {
                reason: REASON_INVALID.into(),
                message: m,
            }
        );
    }

    fn state(error: Option<(&str, &str)>, served: Option<&str>) -> IngressState {
        IngressState {
            ingress: Box::new(ingress("hello")),
            served_hash: served.map(str::to_string),
            error: error.map(|(_, m)| m.to_string()),
            reason: error.map(|(r, _)| r.to_string()),
            error_field: None,
            generation: 1,
            hosts: vec![("hello.example.com".into(), false)],
        }
    }

    #[test]
    fn readiness_follows_translation_proof_and_conflicts() {
        let h = "abc".to_string();
        let other = "old".to_string();
        // Translated and served, not proven yet (or proven at an older hash): waiting.
        assert_eq!(
            readiness_of(&state(None, Some("abc")), None),
            Readiness::waiting()
        );
        assert_eq!(
            readiness_of(&state(None, Some("abc")), Some(&other)),
            Readiness::waiting()
        );
        // Nothing served yet: waiting, even if something was proven under that key before.
        assert_eq!(
            readiness_of(&state(None, None), Some(&h)),
            Readiness::waiting()
        );
        // ACKed and probed at the served hash: Ready.
        assert_eq!(
            readiness_of(&state(None, Some("abc")), Some(&h)),
            Readiness::Ready
        );
        // A translation error: not configured, even while the previous translation serves.
        let failed = state(
            Some(("TranslationFailed", "service web/a not found")),
            Some("abc"),
        );
        assert_eq!(
            readiness_of(&failed, Some(&h)),
            Readiness::NotConfigured {
                reason: "TranslationFailed".into(),
                message: "service web/a not found".into()
            }
        );
        let invalid = state(Some(("InvalidIngress", "split must total 100")), None);
        assert!(matches!(
            readiness_of(&invalid, None),
            Readiness::NotConfigured { reason, .. } if reason == "InvalidIngress"
        ));
        // A host lost to an earlier KIngress.
        let conflict = state(Some((DOMAIN_CONFLICT, "host taken")), None);
        assert_eq!(
            readiness_of(&conflict, Some(&h)),
            Readiness::LoadBalancerFailed {
                reason: DOMAIN_CONFLICT.into(),
                message: "host taken".into()
            }
        );
    }

    #[test]
    fn problems_name_the_object_and_field() {
        let mut gw = GatewayState::new(sluice_serving::GatewayConfig {
            external_http: "127.0.0.1:1".parse().unwrap(),
            internal_http: "127.0.0.1:2".parse().unwrap(),
            external_https: "127.0.0.1:3".parse().unwrap(),
            internal_https: "127.0.0.1:4".parse().unwrap(),
            ..Default::default()
        });
        // A KIngress naming a Service that does not exist.
        let mut i = ingress("hello");
        i.spec = serde_json::from_value(serde_json::json!({"rules": [{
            "hosts": ["hello.example.com"], "visibility": "ExternalIP",
            "http": {"paths": [{"splits": [{"serviceName": "missing",
                "serviceNamespace": "web", "servicePort": 80, "percent": 100}]}]}}]}))
        .unwrap();
        let _ = gw.apply(vec![(
            key(Kind::Ingress, &i.metadata),
            Some(Object::Ingress(Box::new(i))),
        )]);
        let unsynced = [("services".to_string(), "forbidden".to_string())].into();
        let rejected = [(
            IngressKey::new("web", "broken"),
            Rejected {
                ingress: ingress("broken"),
                message: "does not decode: unknown field `rulez`".into(),
            },
        )]
        .into();
        let problems: Vec<String> = problems_of(&unsynced, &gw, &rejected)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert_eq!(problems[0], "kube: services: not synced yet: forbidden");
        assert_eq!(
            problems[1],
            "kube: Ingress web/broken: does not decode: unknown field `rulez` (the previous version keeps serving)"
        );
        let field = "spec.rules[0].http.paths[0].splits[0].serviceName";
        assert!(
            problems[2].starts_with(&format!("kube: Ingress web/hello: {field}: "))
                && problems[2].ends_with("service web/missing not found"),
            "{}",
            problems[2]
        );
    }

    #[test]
    fn instance_name_prefers_flag_then_pod_name_then_hostname() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            instance_name(Some("a".into()), env(&[("POD_NAME", "b")])),
            "a"
        );
        assert_eq!(
            instance_name(None, env(&[("POD_NAME", "b"), ("HOSTNAME", "c")])),
            "b"
        );
        assert_eq!(instance_name(None, env(&[("HOSTNAME", "c")])), "c");
        assert!(!instance_name(None, env(&[])).is_empty());
    }

    #[test]
    fn retries_back_off() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }
}
