//! The file-directory source: which file defines which object, and what
//! changes when a file changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::documents::{Decoded, Object, ObjectKey, Problem, decode};

/// Objects defined by the files of a directory.
#[derive(Debug, Default)]
pub struct FileSource {
    /// File → the objects it defines, and its problems.
    files: BTreeMap<Arc<Path>, FileEntry>,
    /// Object → (defining file, digest of its content). A digest, not a copy: a changed file
    /// is compared object by object without holding every object twice. Keys and paths are
    /// shared with `files` (at 10k KIngresses there are tens of thousands of each).
    objects: HashMap<Arc<ObjectKey>, (Arc<Path>, u128)>,
    warned_kinds: BTreeSet<String>,
    /// The files with problems (so listing them does not walk every file).
    with_problems: BTreeSet<Arc<Path>>,
}

#[derive(Debug, Default)]
struct FileEntry {
    keys: Vec<Arc<ObjectKey>>,
    problems: Vec<Problem>,
}

/// A change to hand to the gateway state: `None` = deleted.
pub type Change = (ObjectKey, Option<Object>);

/// What a source (the directory, or the cluster) hands the gateway core, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An object was created, changed or (`None`) deleted.
    Change(Change),
    /// A KIngress of our class that cannot be read: the state keeps its previous version (if
    /// any) and the problem is reported — in `/status`, and in the KIngress's status under
    /// `--kube`. A later change of the same KIngress clears it.
    Rejected {
        /// Metadata and status of the object (its spec may be empty).
        ingress: Box<sluice_serving::Ingress>,
        /// Why it was rejected (names the field).
        message: String,
    },
    /// The source has delivered everything it holds (the directory scanned, every watch
    /// listed once): the core translates and publishes only from here on.
    Synced,
}

impl FileSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every problem of every file, sorted by file.
    pub fn problems(&self) -> Vec<Problem> {
        self.with_problems
            .iter()
            .filter_map(|f| self.files.get(f))
            .flat_map(|f| f.problems.clone())
            .collect()
    }

    /// The file that defines `key`, if any does.
    pub fn file_of(&self, key: &ObjectKey) -> Option<&Path> {
        self.objects.get(key).map(|(path, _)| &**path)
    }

    /// A file was created or changed.
    pub fn file_changed(&mut self, path: &Path, text: &str) -> Vec<Change> {
        let Decoded {
            objects,
            mut problems,
            skipped,
        } = decode(path, text);
        for s in skipped {
            // Kinds come from files: shortened, and remembered up to a bound.
            let s = sluice_xds::truncate(&s, 120).into_owned();
            if self.warned_kinds.len() < 256 && self.warned_kinds.insert(s.clone()) {
                tracing::warn!(file = %path.display(), kind = %s, "kind not read by the gateway; skipped (reported once per kind)");
            }
        }
        for p in &problems {
            // Logged when the file changes, not again while it stays as it is.
            let p = sluice_xds::truncate(&p.to_string(), 400).into_owned();
            tracing::warn!(problem = %p, "invalid input; the previous configuration keeps serving");
        }
        let mut changes = Vec::new();
        let (file, old_keys): (Arc<Path>, Vec<Arc<ObjectKey>>) = match self.files.remove_entry(path)
        {
            Some((file, entry)) => (file, entry.keys),
            None => (Arc::from(path), Vec::new()),
        };
        let mut keys: Vec<Arc<ObjectKey>> = Vec::new();
        for (key, object) in objects {
            let known = self.objects.get_key_value(&key);
            if let Some((_, (other, _))) = known
                && **other != *path
            {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    object: Some(key.to_string()),
                    field: None,
                    message: format!(
                        "already defined in {}; this copy is ignored",
                        other.display()
                    ),
                });
                continue;
            }
            let digest = object.digest();
            let key = match known {
                Some((k, (_, d))) => {
                    if *d == digest {
                        // Unchanged: no change to hand on.
                        keys.push(k.clone());
                        continue;
                    }
                    k.clone()
                }
                None => Arc::new(key),
            };
            changes.push(((*key).clone(), Some(object)));
            self.objects.insert(key.clone(), (file.clone(), digest));
            keys.push(key);
        }
        let kept: std::collections::HashSet<&ObjectKey> = keys.iter().map(|k| &**k).collect();
        for k in old_keys {
            if !kept.contains(&*k) {
                self.objects.remove(&*k);
                changes.push(((*k).clone(), None));
            }
        }
        if problems.is_empty() {
            self.with_problems.remove(&file);
        } else {
            self.with_problems.insert(file.clone());
        }
        self.files.insert(file, FileEntry { keys, problems });
        changes
    }

    /// One change the directory watcher reported.
    pub fn apply(&mut self, change: &crate::files::FileChange) -> Vec<Change> {
        match change {
            crate::files::FileChange::Changed(path, text) => self.file_changed(path, text),
            crate::files::FileChange::Removed(path) => self.removed(path),
        }
    }

    /// A file, or a folder and everything under it, is gone.
    pub fn removed(&mut self, path: &Path) -> Vec<Change> {
        // Paths order by component, so everything under `path` follows it.
        let gone: Vec<Arc<Path>> = self
            .files
            .range::<Path, _>((std::ops::Bound::Included(path), std::ops::Bound::Unbounded))
            .map(|(f, _)| f)
            .take_while(|f| f.starts_with(path))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for f in gone {
            self.with_problems.remove(&f);
            if let Some(entry) = self.files.remove(&f) {
                for k in entry.keys {
                    self.objects.remove(&*k);
                    changes.push(((*k).clone(), None));
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n";

    #[test]
    fn edits_and_deletes_produce_changes() {
        let mut s = FileSource::new();
        let c = s.file_changed(Path::new("d/a.yaml"), SVC);
        assert_eq!(c.len(), 1);
        assert!(
            s.file_changed(Path::new("d/a.yaml"), SVC).is_empty(),
            "unchanged content, no change"
        );
        // The same object in a second file is reported, not applied.
        assert!(s.file_changed(Path::new("d/b.yaml"), SVC).is_empty());
        assert!(
            s.problems()[0]
                .message
                .contains("already defined in d/a.yaml")
        );
        let c = s.removed(Path::new("d"));
        assert_eq!(c.len(), 1);
        assert!(c[0].1.is_none());
    }
}
