//! Objects read from files: admission (Knative's defaults and validation), the last good
//! version kept when a newer one is rejected, and the uid and generation an API server would
//! have set.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_serving::FieldError;
use sluice_serving::serving::{Configuration, Key, Route, Service};

use super::Input;
use crate::gateway::documents::{Kind, Problem};

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
