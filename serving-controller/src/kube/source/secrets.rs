//! Only the Secrets the gateway needs are kept: those a KIngress of our class names in
//! `spec.tls`, and those the gateway's own configuration names ([`super::SourceConfig`]'s
//! `pinned_secrets`). A cluster holds many Secrets (service-account tokens, registry
//! credentials, every team's keys); the gateway's memory follows its KIngresses instead.
//!
//! Every Secret the watch reports is kept until the first sync (the KIngresses are not all
//! known before); at the sync the ones nothing names are cut down to their metadata (a stub,
//! so a re-list of the same version changes nothing), and from then on a Secret is kept whole
//! only while something names it. When a KIngress starts naming a Secret held as a stub, it is
//! fetched with one GET; when nothing names it any more, it goes back to a stub and the
//! consumer is told it is gone. Key material of Secrets nobody names is never held, and
//! never handed on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ::kube::Api;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;

use super::{Item, KubeEvent, KubeSource, strip_secret};
use crate::ingress::{Ingress, IngressKey};
use crate::kube::cache::{Change, ObjectKey};
use crate::kube::resource::key_of;

/// Which Secrets are named, and by whom.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// Secret → how many things name it.
    refs: HashMap<ObjectKey, usize>,
    /// What each KIngress names.
    by_ingress: HashMap<IngressKey, Vec<ObjectKey>>,
    /// Secrets held as stubs (metadata only).
    stubs: HashSet<ObjectKey>,
    /// Secrets the gateway's configuration names now (see [`KubeSource::name_config_secrets`]).
    config: Vec<ObjectKey>,
}

/// The Secrets a KIngress names (`spec.tls[*]`).
fn named_by(i: &Ingress) -> Vec<ObjectKey> {
    let mut v: Vec<ObjectKey> = i
        .spec
        .tls
        .iter()
        .filter(|t| !t.secret_name.is_empty())
        .map(|t| ObjectKey {
            namespace: t.secret_namespace.clone(),
            name: t.secret_name.clone(),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A Secret cut down to what tells it apart (key, resource version): no data, no labels.
fn stub(s: &Secret) -> Secret {
    let mut meta = s.metadata.clone();
    meta.labels = None;
    meta.annotations = None;
    Secret {
        metadata: meta,
        type_: s.type_.clone(),
        ..Secret::default()
    }
}

impl Wanted {
    /// Names `keys` (pinned by configuration: never released).
    pub fn pin(&mut self, keys: impl IntoIterator<Item = ObjectKey>) {
        for k in keys {
            *self.refs.entry(k).or_default() += 1;
        }
    }

    /// Whether something names `key`.
    pub fn wants(&self, key: &ObjectKey) -> bool {
        self.refs.get(key).is_some_and(|n| *n > 0)
    }

    /// A KIngress now names `now` (none: it is gone). Returns the Secrets that became named
    /// and those no longer named.
    fn ingress_names(
        &mut self,
        key: &IngressKey,
        now: Vec<ObjectKey>,
    ) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
        let before = if now.is_empty() {
            self.by_ingress.remove(key).unwrap_or_default()
        } else {
            self.by_ingress
                .insert(key.clone(), now.clone())
                .unwrap_or_default()
        };
        let mut added = Vec::new();
        let mut released = Vec::new();
        for k in now.iter().filter(|k| !before.contains(k)) {
            let n = self.refs.entry(k.clone()).or_default();
            *n += 1;
            if *n == 1 {
                added.push(k.clone());
            }
        }
        for k in before.iter().filter(|k| !now.contains(k)) {
            if let Some(n) = self.refs.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.refs.remove(k);
                    released.push(k.clone());
                }
            }
        }
        (added, released)
    }
}

impl KubeSource {
    /// The Secrets the gateway's configuration names now (`config-kourier`'s default
    /// certificates): kept whole like those a KIngress names, in place of the previous ones.
    pub fn name_config_secrets(&mut self, keys: Vec<ObjectKey>) {
        let key = IngressKey::new("", "config-kourier");
        let before = std::mem::replace(&mut self.wanted.config, keys.clone());
        if before == keys {
            return;
        }
        let (added, released) = self.wanted.ingress_names(&key, keys);
        if !self.synced {
            return;
        }
        for k in added {
            self.make_available(k);
        }
        for k in released {
            self.release(&k);
        }
    }

    /// After KIngress events were queued from `from` on: follow what they name.
    pub(super) fn follow_ingress_events(&mut self, from: usize) {
        let changes: Vec<(IngressKey, Vec<ObjectKey>)> = self
            .pending
            .iter()
            .skip(from)
            .filter_map(|e| match e {
                KubeEvent::IngressApplied(i) => Some((i.key(), named_by(i))),
                KubeEvent::IngressDeleted(k) => Some((k.clone(), Vec::new())),
                _ => None,
            })
            .collect();
        for (key, now) in changes {
            let (added, released) = self.wanted.ingress_names(&key, now);
            if !self.synced {
                continue;
            }
            for k in added {
                self.make_available(k);
            }
            for k in released {
                self.release(&k);
            }
        }
    }

    /// A Secret just became named: hand it on if held whole, fetch it if held as a stub (a
    /// Secret not held at all does not exist yet: its watch event brings it).
    fn make_available(&mut self, key: ObjectKey) {
        if self.wanted.stubs.contains(&key) {
            self.fetch(key);
        } else if let Some(s) = self.cache.secrets.get(&key) {
            self.pending
                .push_back(KubeEvent::SecretApplied(Arc::clone(s)));
        }
    }

    /// A Secret is no longer named: keep only its stub and tell the consumer it is gone.
    fn release(&mut self, key: &ObjectKey) {
        if self.wanted.stubs.contains(key) {
            return;
        }
        if let Some(s) = self.cache.secrets.get(key).cloned() {
            self.cache.secrets.replace_quietly(Arc::new(stub(&s)));
            self.wanted.stubs.insert(key.clone());
            self.pending.push_back(KubeEvent::SecretDeleted(s));
        }
    }

    /// One GET for a Secret held as a stub; its answer comes back as [`Item::SecretFetched`].
    fn fetch(&mut self, key: ObjectKey) {
        self.fetch_after(key, std::time::Duration::ZERO);
    }

    fn fetch_after(&mut self, key: ObjectKey, delay: std::time::Duration) {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = key.name.clone();
        let fetched = futures::stream::once(async move {
            tokio::time::sleep(delay).await;
            let result = api.get_opt(&name).await;
            (usize::MAX, Item::SecretFetched(key, result))
        });
        self.streams.push(fetched.boxed());
    }

    /// The answer of [`Self::fetch`].
    pub(super) fn fetched(
        &mut self,
        key: ObjectKey,
        result: Result<Option<Secret>, ::kube::Error>,
    ) -> Result<(), crate::kube::KubeError> {
        let secret = match result {
            Ok(s) => s,
            Err(source) => {
                if self.wanted.wants(&key) {
                    self.fetch_after(key.clone(), std::time::Duration::from_secs(1));
                }
                return Err(crate::kube::KubeError::Fetch {
                    resource: super::SECRETS,
                    key,
                    source: Box::new(source),
                });
            }
        };
        let Some(mut secret) = secret else {
            // Deleted meanwhile: its watch event said so, or will.
            return Ok(());
        };
        if !self.wanted.wants(&key) {
            return Ok(());
        }
        strip_secret(&mut secret);
        let secret = Arc::new(secret);
        self.wanted.stubs.remove(&key);
        self.cache.secrets.replace_quietly(Arc::clone(&secret));
        self.pending.push_back(KubeEvent::SecretApplied(secret));
        Ok(())
    }

    /// Secret watch changes, after the first sync: the named ones are handed on, the others
    /// held as stubs.
    pub(super) fn follow_secret_changes(&mut self, changes: Vec<Change<Secret>>) {
        if !self.synced {
            return;
        }
        for change in changes {
            match change {
                Change::Applied { old, new } => {
                    let key = key_of(&new.metadata);
                    if self.wanted.wants(&key) {
                        self.wanted.stubs.remove(&key);
                        self.pending.push_back(KubeEvent::SecretApplied(new));
                    } else {
                        self.cache.secrets.replace_quietly(Arc::new(stub(&new)));
                        let was_whole = old.is_some() && !self.wanted.stubs.contains(&key);
                        self.wanted.stubs.insert(key);
                        if let Some(old) = old.filter(|_| was_whole) {
                            self.pending.push_back(KubeEvent::SecretDeleted(old));
                        }
                    }
                }
                Change::Deleted(old) => {
                    let key = key_of(&old.metadata);
                    if !self.wanted.stubs.remove(&key) {
                        self.pending.push_back(KubeEvent::SecretDeleted(old));
                    }
                }
            }
        }
    }

    /// At the first sync: hand on the named Secrets, cut the rest down to stubs.
    pub(super) fn secrets_at_sync(&mut self) {
        let all: Vec<(ObjectKey, Arc<Secret>)> = self
            .cache
            .secrets
            .iter()
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect();
        for (key, s) in all {
            if self.wanted.wants(&key) {
                self.pending.push_back(KubeEvent::SecretApplied(s));
            } else {
                self.cache.secrets.replace_quietly(Arc::new(stub(&s)));
                self.wanted.stubs.insert(key);
            }
        }
    }
}
