//! The gateway's incremental core: objects in, xDS changes out.
//!
//! Keeps every KIngress of our class, the Services / endpoints / Secrets they
//! name, and per KIngress the translation being served. An event re-translates
//! only the KIngresses it touches (a changed Service re-translates the
//! KIngresses that name it, never the others; a deleted KIngress touches
//! nothing else — net-kourier #941), and the result is an [`Update`] holding
//! only resources whose content changed. Resources shared by several
//! KIngresses (a cluster, a Secret) are reference-counted: removed when the
//! last user goes. A KIngress that fails translation keeps its previous,
//! good translation in service and carries the error for its status.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use sluice_serving::ingress::IngressKey;
use sluice_serving::kourier::KourierEnv;
use sluice_serving::lookup::{ServiceInfo, slice_service};
use sluice_serving::translate::{
    TlsChain, TranslateOptions, gateway_resources, translate_ingress_with,
};
use sluice_serving::{
    DomainConflict, GatewayConfig, Ingress, IngressResources, Objects, TranslateError, is_ours,
    resolve_conflicts,
};
use sluice_xds::{Resource, Update};

use super::documents::{Kind, Object, ObjectKey};

mod settings;
pub use settings::ConfigStatus;

/// A resource: its type URL (one of xDS's, so static) and its name.
type ResKey = (&'static str, String);

/// The key of a resource of type `type_url` named `name`.
fn res_key(type_url: &str, name: &str) -> ResKey {
    let t = sluice_xds::resource::PUSH_ORDER
        .into_iter()
        .find(|t| *t == type_url)
        // Translation only makes the six xDS types; were it to make another, keying it under
        // the route type would only merge it with a route of the same name.
        .unwrap_or(sluice_xds::resource::ROUTE);
    (t, name.to_string())
}

/// The state of one KIngress, for status.
#[derive(Debug, Clone)]
pub struct IngressState {
    /// The object as last read (boxed: the map of states stays small).
    pub ingress: Box<Ingress>,
    /// Its probe hash as served (from the last good translation).
    pub served_hash: Option<String>,
    /// The last translation error, if the current spec could not be served.
    pub error: Option<String>,
    /// Reason for `error` (`DomainConflict`, `TranslationFailed`, …).
    pub reason: Option<String>,
    /// The field `error` is about (Knative's path syntax), when it names one.
    pub error_field: Option<String>,
    /// Cache generation at which its current translation was published.
    pub generation: u64,
    /// Hosts per rule (for probing): (host, cluster-local).
    pub hosts: Vec<(String, bool)>,
}

/// The gateway's objects and what is served for them.
#[derive(Debug)]
pub struct GatewayState {
    config: GatewayConfig,
    objects: Objects,
    ingresses: BTreeMap<IngressKey, IngressState>,
    /// Per KIngress, what its translation serves — encoded once, bodies shared with `held`
    /// and the cache (the typed translation is not kept: at 10k KIngresses it was the
    /// largest thing in memory).
    served: BTreeMap<IngressKey, Served>,
    /// Every served resource but listeners: the KIngresses contributing it and its current
    /// body.
    held: HashMap<ResKey, Held>,
    /// The gateway's own resources (listeners, config clusters, default certificates, the
    /// readiness route), by key.
    own: BTreeMap<ResKey, Resource>,
    /// `config-kourier` and how it was taken.
    settings: settings::Settings,
    /// Which KIngresses name each Service / Secret, so an event on one touches
    /// only those (no scan over every KIngress).
    refs: Refs,
    /// KIngresses rejected for a host another one holds; recomputed only when
    /// some KIngress's hosts change.
    conflicts: BTreeMap<IngressKey, DomainConflict>,
    /// KIngresses whose last translation failed (or lost a host): what `/status` and the
    /// sources' problem lists look at, instead of every KIngress on every change.
    failing: BTreeSet<IngressKey>,
    /// KIngresses whose served hash changed since [`Self::take_to_prove`] was last called.
    to_prove: BTreeSet<IngressKey>,
    /// KIngresses served with TLS chains (what the listeners are built from).
    with_tls: BTreeSet<IngressKey>,
    /// Whether the gateway's own resources may have changed since they were last built: a
    /// TLS chain, a Secret or the configuration changed (most edits touch none of these).
    own_dirty: bool,
}

/// A served resource.
#[derive(Debug)]
struct Held {
    /// The KIngresses contributing it, sorted (most resources have one).
    owners: Vec<IngressKey>,
    /// Its current body: a shared resource follows its first owner.
    current: Resource,
}

/// What one KIngress's translation serves.
#[derive(Debug)]
struct Served {
    /// Its resources (not listeners), encoded.
    resources: Vec<Resource>,
    /// Its HTTPS filter chains, for the listeners.
    tls: Vec<TlsChain>,
}

impl Served {
    fn new(t: IngressResources) -> Self {
        Self {
            resources: t.resources(),
            tls: t.tls,
        }
    }

    fn get(&self, key: &ResKey) -> Option<&Resource> {
        self.resources
            .iter()
            .find(|r| (r.type_url(), r.name()) == (key.0, key.1.as_str()))
    }
}

/// A namespace and a name.
type NsName = (String, String);

/// Reverse index: (namespace, name) of a Service or Secret → the KIngresses naming it.
#[derive(Debug, Default)]
struct Refs {
    services: HashMap<(String, String), Vec<IngressKey>>,
    secrets: HashMap<(String, String), Vec<IngressKey>>,
    by_ingress: HashMap<IngressKey, (Vec<NsName>, Vec<NsName>)>,
}

impl Refs {
    /// Records what `ingress` names now (`None`: it is gone).
    fn set(&mut self, key: &IngressKey, ingress: Option<&Ingress>) {
        if let Some((services, secrets)) = self.by_ingress.remove(key) {
            for s in services {
                remove_ref(&mut self.services, &s, key);
            }
            for s in secrets {
                remove_ref(&mut self.secrets, &s, key);
            }
        }
        let Some(i) = ingress else { return };
        let mut services: Vec<(String, String)> = i
            .spec
            .rules
            .iter()
            .flat_map(|r| r.http.iter().flat_map(|h| &h.paths))
            .flat_map(|p| &p.splits)
            .map(|sp| (sp.service_namespace.clone(), sp.service_name.clone()))
            .collect();
        services.sort();
        services.dedup();
        let mut secrets: Vec<(String, String)> = i
            .spec
            .tls
            .iter()
            .map(|t| (t.secret_namespace.clone(), t.secret_name.clone()))
            .collect();
        secrets.sort();
        secrets.dedup();
        for s in &services {
            add_ref(&mut self.services, s, key);
        }
        for s in &secrets {
            add_ref(&mut self.secrets, s, key);
        }
        self.by_ingress.insert(key.clone(), (services, secrets));
    }
}

/// Records that `key` names `target` (each list sorted: most have one entry, and a `Vec`
/// costs a fraction of a `BTreeSet` node at 10k KIngresses).
fn add_ref(
    map: &mut HashMap<(String, String), Vec<IngressKey>>,
    target: &(String, String),
    key: &IngressKey,
) {
    let keys = map.entry(target.clone()).or_default();
    if let Err(at) = keys.binary_search(key) {
        keys.insert(at, key.clone());
    }
}

fn remove_ref(
    map: &mut HashMap<(String, String), Vec<IngressKey>>,
    target: &(String, String),
    key: &IngressKey,
) {
    if let Some(set) = map.get_mut(target) {
        if let Ok(at) = set.binary_search(key) {
            set.remove(at);
        }
        if set.is_empty() {
            map.remove(target);
        }
    }
}

impl GatewayState {
    /// An empty gateway serving on `config`'s listeners, `config-kourier` at its defaults.
    pub fn new(config: GatewayConfig) -> Self {
        Self::with_env(config, KourierEnv::default())
    }

    /// [`Self::new`], with the environment's `config-kourier` fallbacks (`CERTS_SECRET_*`,
    /// `KOURIER_EXTAUTHZ_*`).
    pub fn with_env(config: GatewayConfig, env: KourierEnv) -> Self {
        Self {
            config,
            objects: Objects::new(),
            ingresses: BTreeMap::new(),
            served: BTreeMap::new(),
            held: HashMap::new(),
            own: BTreeMap::new(),
            settings: settings::Settings::new(env),
            refs: Refs::default(),
            conflicts: BTreeMap::new(),
            failing: BTreeSet::new(),
            to_prove: BTreeSet::new(),
            with_tls: BTreeSet::new(),
            own_dirty: true,
        }
    }

    /// The Services, endpoints and Secrets read so far.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// KIngresses of our class, by key.
    pub fn ingresses(&self) -> &BTreeMap<IngressKey, IngressState> {
        &self.ingresses
    }

    /// Applies object changes (`Some` = added/changed, `None` = deleted) and
    /// returns the xDS update to publish plus the KIngresses whose served
    /// configuration changed in it.
    pub fn apply(
        &mut self,
        changes: Vec<(ObjectKey, Option<Object>)>,
    ) -> (Update, BTreeSet<IngressKey>) {
        let mut touched: BTreeSet<IngressKey> = BTreeSet::new();
        let mut hosts_changed = false;
        for (key, object) in changes {
            let k = (key.namespace.clone(), key.name.clone());
            match (key.kind, object) {
                (Kind::Ingress, Some(Object::Ingress(mut i))) => {
                    let ik = IngressKey::new(&key.namespace, &key.name);
                    if !is_ours(&i) {
                        // Another class (or it left ours): never touched.
                        if self.ingresses.remove(&ik).is_some() {
                            self.refs.set(&ik, None);
                            touched.insert(ik);
                            hosts_changed = true;
                        }
                        continue;
                    }
                    i.set_defaults();
                    i.shrink_to_fit();
                    let hosts = rule_hosts(&i);
                    let prev = self.ingresses.get(&ik);
                    if prev.is_some_and(|p| p.ingress == i) {
                        continue;
                    }
                    hosts_changed |= prev.is_none_or(|p| p.hosts != hosts);
                    let (served_hash, generation) = prev
                        .map(|p| (p.served_hash.clone(), p.generation))
                        .unwrap_or((None, 0));
                    self.ingresses.insert(
                        ik.clone(),
                        IngressState {
                            ingress: i,
                            served_hash,
                            error: None,
                            reason: None,
                            error_field: None,
                            generation,
                            hosts,
                        },
                    );
                    self.refs
                        .set(&ik, self.ingresses.get(&ik).map(|s| &*s.ingress));
                    touched.insert(ik);
                }
                (Kind::Ingress, _) => {
                    let ik = IngressKey::new(&key.namespace, &key.name);
                    if self.ingresses.remove(&ik).is_some() {
                        self.refs.set(&ik, None);
                        touched.insert(ik);
                        hosts_changed = true;
                    }
                }
                (Kind::Service, o) => {
                    match o {
                        Some(Object::Service(s)) => {
                            self.objects
                                .services
                                .insert(k.clone(), ServiceInfo::new(*s));
                        }
                        _ => {
                            self.objects.services.remove(&k);
                        }
                    }
                    touched.extend(self.naming_service(&key.namespace, &key.name));
                }
                (Kind::EndpointSlice, o) => {
                    let old = self.objects.remove_endpoint_slice(&k.0, &k.1);
                    let mut services: Vec<String> = old.into_iter().flatten().collect();
                    if let Some(Object::EndpointSlice(s)) = o {
                        services.extend(slice_service(&s));
                        self.objects.add_endpoint_slice(*s);
                    }
                    for svc in services {
                        touched.extend(self.naming_service(&key.namespace, &svc));
                    }
                }
                (Kind::Endpoints, o) => {
                    match o {
                        Some(Object::Endpoints(e)) => {
                            self.objects.endpoints.insert(k.clone(), e);
                        }
                        _ => {
                            self.objects.endpoints.remove(&k);
                        }
                    }
                    touched.extend(self.naming_service(&key.namespace, &key.name));
                }
                (Kind::Secret, o) => {
                    // Default certificates are Secrets.
                    self.own_dirty = true;
                    match o {
                        Some(Object::Secret(s)) => {
                            self.objects.secrets.insert(k.clone(), s);
                        }
                        _ => {
                            self.objects.secrets.remove(&k);
                        }
                    }
                    touched.extend(self.naming_secret(&key.namespace, &key.name));
                    if self.config.internal_tls
                        && key.namespace == sluice_serving::kourier::SYSTEM_NAMESPACE
                        && key.name == sluice_serving::translate::internal_tls::ROUTING_CA_SECRET
                    {
                        // The CA every split trusts under system-internal-tls.
                        touched.extend(self.ingresses.keys().cloned());
                    }
                }
                (Kind::ConfigMap, o) => {
                    if self.config_map_changed(&key, o) {
                        self.own_dirty = true;
                        // New options shape every KIngress's translation.
                        touched.extend(self.ingresses.keys().cloned());
                    }
                }
                // Knative's serving objects are for `sluice up`'s controller.
                (Kind::KnativeService | Kind::Configuration | Kind::Route, _) => {}
            }
        }
        // Host ownership can only move when some KIngress's hosts changed.
        if hosts_changed {
            self.conflicts = resolve_conflicts(self.ingresses.values().map(|s| &*s.ingress));
        }
        let conflicts = std::mem::take(&mut self.conflicts);
        if hosts_changed {
            // A removed or re-hosted KIngress may free a host for a rejected one.
            for (k, s) in &self.ingresses {
                if s.reason.as_deref() == Some(sluice_serving::conflict::DOMAIN_CONFLICT)
                    && !conflicts.contains_key(k)
                {
                    touched.insert(k.clone());
                }
            }
            for k in conflicts.keys() {
                if self.served.contains_key(k) {
                    touched.insert(k.clone());
                }
            }
        }
        let mut update = Update::new();
        let mut changed = BTreeSet::new();
        for key in touched {
            let hash_before = self.ingresses.get(&key).and_then(|s| s.served_hash.clone());
            let served = self.retranslate(&key, conflicts.get(&key), &mut update);
            let hash = self
                .ingresses
                .get(&key)
                .and_then(|s| s.served_hash.as_ref());
            if hash.is_some() && hash != hash_before.as_ref() {
                self.to_prove.insert(key.clone());
            }
            match self.ingresses.get(&key) {
                Some(st) if st.error.is_some() => {
                    self.failing.insert(key.clone());
                }
                _ => {
                    self.failing.remove(&key);
                }
            }
            if served {
                changed.insert(key);
            }
        }
        self.conflicts = conflicts;
        self.refresh_own(&mut update);
        self.settle(&mut update);
        (update, changed)
    }

    /// One action per resource in `update`: what [`Self::apply`] ended with. A resource one
    /// KIngress dropped and another took up in the same batch (a deleted KIngress's host passing
    /// to the one it blocked, both naming the same Service) is kept, not removed after being
    /// upserted; a resource upserted twice is sent once, as it is now.
    fn settle(&self, update: &mut Update) {
        let key = |r: &Resource| (r.type_url().to_string(), r.name().to_string());
        let held = |k: &(String, String)| self.held.contains_key(&res_key(&k.0, &k.1));
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut upserts: Vec<Resource> = std::mem::take(&mut update.upserts)
            .into_iter()
            .rev()
            .filter(|r| seen.insert(key(r)))
            .collect();
        upserts.reverse();
        let removed: HashSet<(String, String)> = update.removals.iter().cloned().collect();
        // `held` holds the served shared resources (listeners are never both upserted and
        // removed): present means the upsert came last, absent means the removal did.
        upserts.retain(|r| {
            let k = key(r);
            !removed.contains(&k) || held(&k)
        });
        let mut removals_seen: HashSet<(String, String)> = HashSet::new();
        update
            .removals
            .retain(|k| !(seen.contains(k) && held(k)) && removals_seen.insert(k.clone()));
        update.upserts = upserts;
    }

    /// The KIngresses whose translation failed or that lost a host to another, with their
    /// state (`error` and `reason` set).
    pub fn failing(&self) -> impl Iterator<Item = (&IngressKey, &IngressState)> {
        self.failing
            .iter()
            .filter_map(|k| self.ingresses.get_key_value(k))
    }

    /// Whether a KIngress's translation failed or it lost a host.
    pub fn is_failing(&self, key: &IngressKey) -> bool {
        self.failing.contains(key)
    }

    /// The KIngresses served at a new hash since the last call: what readiness must prove.
    pub fn take_to_prove(&mut self) -> BTreeSet<IngressKey> {
        std::mem::take(&mut self.to_prove)
    }

    /// The route configurations served for a KIngress: (name, content version).
    pub fn route_versions<'a>(
        &'a self,
        key: &IngressKey,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.served
            .get(key)
            .into_iter()
            .flat_map(|t| &t.resources)
            .filter(|r| r.type_url() == sluice_xds::resource::ROUTE)
            .filter_map(|rc| {
                self.held
                    .get(&res_key(rc.type_url(), rc.name()))
                    .map(|h| (rc.name(), h.current.version()))
            })
    }

    /// Records that the update holding `keys` was published at `generation`.
    pub fn published(&mut self, keys: &BTreeSet<IngressKey>, generation: u64) {
        for k in keys {
            if let Some(s) = self.ingresses.get_mut(k) {
                s.generation = generation;
            }
        }
    }

    fn naming_service(&self, namespace: &str, name: &str) -> Vec<IngressKey> {
        let k = (namespace.to_string(), name.to_string());
        self.refs
            .services
            .get(&k)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    fn naming_secret(&self, namespace: &str, name: &str) -> Vec<IngressKey> {
        let k = (namespace.to_string(), name.to_string());
        self.refs
            .secrets
            .get(&k)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Re-translates one KIngress and records the resource changes; returns
    /// whether what is served for it changed.
    fn retranslate(
        &mut self,
        key: &IngressKey,
        conflict: Option<&DomainConflict>,
        update: &mut Update,
    ) -> bool {
        let next: Option<IngressResources> = match self.ingresses.get_mut(key) {
            None => None,
            Some(state) => {
                if let Some(c) = conflict {
                    state.error = Some(c.to_string());
                    state.reason = Some(c.reason().to_string());
                    state.error_field = None;
                    state.served_hash = None;
                    None
                } else {
                    let options = TranslateOptions::of(&self.config);
                    match translate_ingress_with(&state.ingress, &self.objects, &options) {
                        Ok(t) => {
                            state.error = None;
                            state.reason = None;
                            state.error_field = None;
                            state.served_hash = Some(t.hash.clone());
                            Some(t)
                        }
                        Err(e) => {
                            state.reason = Some(reason_of(&e).to_string());
                            state.error_field = field_of(&e);
                            state.error = Some(e.to_string());
                            tracing::warn!(ingress = %key, error = %e, "translation failed; the previous configuration keeps serving");
                            return false;
                        }
                    }
                }
            }
        };
        let old = self.served.remove(key);
        // Only the old keys matter: no need to encode the old translation again.
        let next = next.map(Served::new);
        let had_tls = old.as_ref().is_some_and(|o| !o.tls.is_empty());
        let has_tls = next.as_ref().is_some_and(|n| !n.tls.is_empty());
        if had_tls || has_tls {
            self.own_dirty = true;
        }
        if has_tls {
            self.with_tls.insert(key.clone());
        } else {
            self.with_tls.remove(key);
        }
        let old_keys: Vec<ResKey> = old
            .iter()
            .flat_map(|o| &o.resources)
            .map(|r| res_key(r.type_url(), r.name()))
            .collect();
        let new_res: HashMap<ResKey, &Resource> = next
            .iter()
            .flat_map(|o| &o.resources)
            .map(|r| (res_key(r.type_url(), r.name()), r))
            .collect();
        let mut changed = false;
        for (k, r) in new_res.iter() {
            match self.held.entry(k.clone()) {
                Entry::Vacant(v) => {
                    v.insert(Held {
                        owners: vec![key.clone()],
                        current: (*r).clone(),
                    });
                    update.upserts.push((*r).clone());
                    changed = true;
                }
                Entry::Occupied(o) => {
                    let h = o.into_mut();
                    if let Err(at) = h.owners.binary_search(key) {
                        h.owners.insert(at, key.clone());
                    }
                    // A shared resource follows its first owner; others only add a user.
                    if h.owners.first() == Some(key) && h.current.version() != r.version() {
                        h.current = (*r).clone();
                        update.upserts.push((*r).clone());
                        changed = true;
                    }
                }
            }
        }
        for k in old_keys.iter().filter(|k| !new_res.contains_key(*k)) {
            let Some(h) = self.held.get_mut(k) else {
                continue;
            };
            if let Ok(at) = h.owners.binary_search(key) {
                h.owners.remove(at);
            }
            if h.owners.is_empty() {
                self.held.remove(k);
                update.removals.push((k.0.to_string(), k.1.clone()));
                changed = true;
            } else if let Some(r) = self.served.get(&h.owners[0]).and_then(|t| t.get(k))
                && h.current.version() != r.version()
            {
                h.current = r.clone();
                update.upserts.push(r.clone());
                changed = true;
            }
        }
        if let Some(t) = next {
            self.served.insert(key.clone(), t);
        }
        changed || old.is_none() != self.served.contains_key(key)
    }

    /// Brings the gateway's own resources up to date (listeners follow the KIngresses' TLS
    /// chains; default certificates follow their Secrets).
    fn refresh_own(&mut self, update: &mut Update) {
        if !std::mem::take(&mut self.own_dirty) {
            return;
        }
        let chains = self
            .with_tls
            .iter()
            .filter_map(|k| self.served.get(k))
            .flat_map(|t| t.tls.iter());
        let own = gateway_resources(&self.config, chains, &self.objects);
        self.settings.problems = own.problems;
        let next: BTreeMap<ResKey, Resource> = own
            .resources
            .into_iter()
            .map(|r| (res_key(r.type_url(), r.name()), r))
            .collect();
        for (k, r) in &next {
            if self.own.get(k).is_none_or(|o| o.version() != r.version()) {
                update.upserts.push(r.clone());
            }
        }
        for (k, r) in &self.own {
            if !next.contains_key(k) {
                update
                    .removals
                    .push((r.type_url().to_string(), k.1.clone()));
            }
        }
        self.own = next;
    }
}

fn rule_hosts(i: &Ingress) -> Vec<(String, bool)> {
    use sluice_serving::ingress::Visibility;
    i.spec
        .rules
        .iter()
        .flat_map(|r| {
            let local = r.visibility() == Visibility::ClusterLocal;
            r.served_hosts()
                .into_iter()
                .map(move |h| (h.to_string(), local))
        })
        .collect()
}

/// The field a translation error is about: the paths of Knative's validation errors, or the
/// field the error names.
fn field_of(e: &TranslateError) -> Option<String> {
    match e {
        TranslateError::Invalid { errors, .. } => {
            let mut paths: Vec<&str> = errors
                .iter()
                .flat_map(|e| e.paths.iter().map(String::as_str))
                .collect();
            paths.sort_unstable();
            paths.dedup();
            (!paths.is_empty()).then(|| paths.join(", "))
        }
        TranslateError::UnsupportedHost { field, .. }
        | TranslateError::Unacceptable { field, .. }
        | TranslateError::ServiceNotFound { field, .. }
        | TranslateError::PortNotFound { field, .. }
        | TranslateError::ExternalNameMissing { field, .. }
        | TranslateError::SecretNotFound { field, .. }
        | TranslateError::SecretKeyMissing { field, .. }
        | TranslateError::SecretNotPem { field, .. }
        | TranslateError::InternalTls { field, .. } => Some(field.clone()),
        TranslateError::OtherClass { .. } => None,
    }
}

fn reason_of(e: &TranslateError) -> &'static str {
    match e {
        TranslateError::Invalid { .. } | TranslateError::Unacceptable { .. } => "InvalidIngress",
        _ => "TranslationFailed",
    }
}

#[cfg(test)]
mod tests;
