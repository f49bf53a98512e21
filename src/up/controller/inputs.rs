//! Objects read from files: admission (Knative's defaults and validation), the last good
//! version kept when a newer one is rejected, and the uid and generation an API server would
//! have set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_serving::FieldError;
use sluice_serving::serving::{Configuration, Key, Route, Service};

use sluice_serving::serving::{ServingConfig, admit_configuration, admit_route, admit_service};

use super::Input;
use crate::gateway::documents::{Kind, Object, ObjectKey, Problem};

/// A Configuration or Route (`kind`) named like a Knative Service, which owns that name.
pub(super) fn shadow_problem(file: &Path, kind: Kind, key: &Key) -> Problem {
    Problem {
        file: file.to_path_buf(),
        object: Some(format!("{kind} {}/{}", key.namespace, key.name)),
        field: Some("metadata.name".into()),
        message: format!(
            "a Knative Service of the same name owns this {kind}; this copy is ignored (rename it)"
        ),
    }
}

/// Records a new version of an input: admitted, it becomes the good version (with a new
/// generation when its spec changed); rejected, the previous good version stays.
pub(super) fn update_input<T: Clone + Object2>(
    map: &mut BTreeMap<Key, Input<T>>,
    key: Key,
    file: &Path,
    raw: T,
    admitted: Result<T, Vec<FieldError>>,
) {
    let entry = map.entry(key.clone()).or_insert_with(|| Input {
        file: file.to_path_buf(),
        good: None,
        generation: 0,
        rejected: None,
    });
    entry.file = file.to_path_buf();
    match admitted {
        Ok(mut good) => {
            let same_spec = entry.good.as_ref().is_some_and(|g| g.spec_eq(&good));
            if !same_spec {
                entry.generation += 1;
            }
            stamp(good.meta_mut(), &key, raw.kind_name(), entry.generation);
            entry.good = Some(good);
            entry.rejected = None;
        }
        Err(errors) => {
            tracing::warn!(object = %key, errors = %errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "), "invalid object; the last good version stays in effect");
            entry.rejected = Some(errors);
        }
    }
}

/// Admits the good version of `key` again (the configuration changed). It is defaulted
/// already, which admission accepts again: defaulting is idempotent.
pub(super) fn readmit<T: Clone + Object2>(
    key: &Key,
    input: &mut Input<T>,
    admit: impl Fn(&T) -> Result<T, Vec<FieldError>>,
) {
    if let Some(good) = &input.good {
        match admit(good) {
            Ok(mut g) => {
                stamp(g.meta_mut(), key, good.kind_name(), input.generation);
                input.good = Some(g);
            }
            Err(errors) => input.rejected = Some(errors),
        }
    }
}

/// What [`update_input`] needs of Knative objects.
pub(super) trait Object2 {
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    fn kind_name(&self) -> &'static str;
    fn spec_eq(&self, other: &Self) -> bool;
}

macro_rules! object2 {
    ($($t:ty),*) => {$(
        impl Object2 for $t {
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn kind_name(&self) -> &'static str {
                <$t>::KIND
            }
            fn spec_eq(&self, other: &Self) -> bool {
                self.spec == other.spec
            }
        }
    )*};
}

object2!(Service, Configuration, Route);

/// A uid and generation, as the API server would set them: the uid is stable for a kind,
/// namespace and name (FNV-1a), so labels derived from it survive restarts.
fn stamp(meta: &mut ObjectMeta, key: &Key, kind: &str, generation: i64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{kind}/{}/{}", key.namespace, key.name).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    meta.uid = Some(format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xffff,
        (h >> 48) & 0xffff,
        h & 0xffff_ffff_ffff
    ));
    meta.generation = Some(generation);
}

impl super::Controller {
    /// A Knative object or a `knative-serving` ConfigMap was created or changed in `file`, or
    /// (`None`) deleted. Other kinds are not the controller's (the caller hands them to the
    /// gateway).
    pub fn object_changed(&mut self, key: &ObjectKey, object: Option<Object>, file: &Path) {
        let k = Key::new(&key.namespace, &key.name);
        match (key.kind, object) {
            (Kind::KnativeService, Some(Object::KnativeService(s))) => {
                let admitted = admit_service(&s, &self.cfg);
                update_input(&mut self.services, k.clone(), file, *s, admitted);
                self.service_touched(&k);
            }
            (Kind::KnativeService, _) => {
                self.services.remove(&k);
                self.service_touched(&k);
            }
            (Kind::Configuration, Some(Object::Configuration(c))) => {
                let admitted = admit_configuration(&c, &self.cfg);
                update_input(&mut self.configurations, k.clone(), file, *c, admitted);
                self.dirty_configs.insert(k);
            }
            (Kind::Configuration, _) => {
                self.configurations.remove(&k);
                self.dirty_configs.insert(k);
            }
            (Kind::Route, Some(Object::Route(r))) => {
                let admitted = admit_route(&r);
                update_input(&mut self.routes, k.clone(), file, *r, admitted);
                self.dirty_routes.insert(k);
            }
            (Kind::Route, _) => {
                self.routes.remove(&k);
                self.dirty_routes.insert(k);
            }
            (Kind::ConfigMap, object) => {
                if key.namespace != sluice_serving::serving::config::SYSTEM_NAMESPACE {
                    return;
                }
                match object {
                    Some(Object::ConfigMap(cm)) => {
                        self.config_maps
                            .insert(key.name.clone(), (file.to_path_buf(), *cm));
                    }
                    _ => {
                        self.config_maps.remove(&key.name);
                    }
                }
                self.rebuild_config();
            }
            _ => {}
        }
    }

    pub(super) fn service_touched(&mut self, k: &Key) {
        self.dirty_configs.insert(k.clone());
        self.dirty_routes.insert(k.clone());
    }

    /// Re-reads the ConfigMaps; on a change everything is admitted and reconciled again.
    pub(super) fn rebuild_config(&mut self) {
        let mut cfg = ServingConfig::default();
        self.config_error = None;
        self.autoscaler_cfg = sluice_autoscaler::Config::default();
        for (name, (file, cm)) in &self.config_maps {
            let empty = BTreeMap::new();
            let data = cm.data.as_ref().unwrap_or(&empty);
            if name == sluice_autoscaler::CONFIG_NAME {
                match sluice_autoscaler::Config::from_map(data) {
                    Ok(c) => self.autoscaler_cfg = c,
                    Err(e) => {
                        self.config_error = Some(Problem {
                            file: file.clone(),
                            object: Some(format!("ConfigMap knative-serving/{name}")),
                            field: None,
                            message: format!("{e}; the defaults are used instead"),
                        });
                    }
                }
                continue;
            }
            if let Err(e) = cfg.apply(name, data) {
                self.config_error = Some(Problem {
                    file: file.clone(),
                    object: Some(format!("ConfigMap knative-serving/{name}")),
                    field: None,
                    message: format!("{e}; the defaults are used instead"),
                });
            }
        }
        if let Some(domain) = &self.domain_override {
            cfg.domain = sluice_serving::serving::DomainConfig::single(domain);
        }
        // Revisions run as processes here: no sidecars.
        cfg.features.multi_container = false;
        if cfg == self.cfg {
            return;
        }
        self.cfg = cfg;
        // Admission depends on config-defaults: admit every object again.
        let cfg = self.cfg.clone();
        for (key, input) in &mut self.services {
            readmit(key, input, |s| admit_service(s, &cfg));
        }
        for (key, input) in &mut self.configurations {
            readmit(key, input, |c| admit_configuration(c, &cfg));
        }
        for (key, input) in &mut self.routes {
            readmit(key, input, admit_route);
        }
        let keys: Vec<Key> = self
            .services
            .keys()
            .chain(self.configurations.keys())
            .chain(self.config_outcomes.keys())
            .cloned()
            .collect();
        self.dirty_configs.extend(keys);
        let keys: Vec<Key> = self
            .services
            .keys()
            .chain(self.routes.keys())
            .chain(self.route_outcomes.keys())
            .cloned()
            .collect();
        self.dirty_routes.extend(keys);
    }

    pub(super) fn update_shadowed(&mut self) {
        self.shadowed.clear();
        for (k, c) in &self.configurations {
            if self.services.contains_key(k) {
                self.shadowed
                    .insert(k.clone(), shadow_problem(&c.file, Kind::Configuration, k));
            }
        }
        for (k, r) in &self.routes {
            if self.services.contains_key(k) {
                self.shadowed
                    .insert(k.clone(), shadow_problem(&r.file, Kind::Route, k));
            }
        }
    }

    /// The file defining a Revision's template (its Service's or Configuration's).
    pub fn revision_file(&self, revision: &Key) -> Option<PathBuf> {
        let config = self.configuration_of(revision)?;
        self.services
            .get(&config)
            .map(|s| s.file.clone())
            .or_else(|| self.configurations.get(&config).map(|c| c.file.clone()))
    }

    /// Every input problem: files' objects that fail validation, ConfigMaps that do not
    /// parse, objects shadowed by a Service of the same name.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self.config_error.iter().cloned().collect();
        let mut add = |kind: Kind, key: &Key, file: &Path, errors: &[FieldError]| {
            for e in errors {
                let fields = if e.paths.is_empty() {
                    None
                } else {
                    Some(e.paths.join(", "))
                };
                out.push(Problem {
                    file: file.to_path_buf(),
                    object: Some(format!("{kind} {}/{}", key.namespace, key.name)),
                    field: fields,
                    message: e.message.clone(),
                });
            }
        };
        for (k, s) in &self.services {
            if let Some(errors) = &s.rejected {
                add(Kind::KnativeService, k, &s.file, errors);
            }
        }
        for (k, c) in &self.configurations {
            if let Some(errors) = &c.rejected {
                add(Kind::Configuration, k, &c.file, errors);
            }
        }
        for (k, r) in &self.routes {
            if let Some(errors) = &r.rejected {
                add(Kind::Route, k, &r.file, errors);
            }
        }
        out.extend(self.shadowed.values().cloned());
        out
    }
}
