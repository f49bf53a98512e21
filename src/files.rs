//! Watching a directory of YAML/JSON files: the standalone source of truth
//! for `sluice gateway --dir` and `sluice up`.
//!
//! [`scan`] reads every `.yaml`, `.yml` and `.json` file under a directory
//! (recursively, hidden files and editor backups skipped, ignored subtrees such
//! as the state dir left out). [`watch`] then reports changes in debounced
//! batches: a created, edited or renamed-in file is read again, a deleted or
//! renamed-away file (or folder) is reported removed, and a new subfolder is
//! scanned whole. Writers that replace files by rename are handled like edits.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long to wait for more events before reporting a batch while a file of it is still open
/// for writing (see [`SETTLED`] for a batch whose files are all complete).
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// A file was created or changed: its path and content.
    Changed(PathBuf, String),
    /// A file, or a folder and everything under it, is gone.
    Removed(PathBuf),
}

/// Why a directory cannot be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The directory does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The OS file watcher failed.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The notify error.
        source: notify::Error,
    },
}

/// Whether a path names a configuration file we read.
pub fn is_config_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || name.ends_with('~') {
        return false;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Whether `path` (under `root`) is left out: inside an ignored subtree, or
/// under a hidden folder or file (name starting with `.`) below `root`.
fn skipped(root: &Path, path: &Path, ignore: &[PathBuf]) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    ignore.iter().any(|i| path.starts_with(i))
        || rel.components().any(|c| {
            c.as_os_str()
                .to_str()
                .is_some_and(|s| s.starts_with('.') && s != "..")
        })
}

/// Every config file under `root` with its content, sorted by path.
/// Unreadable files are skipped with a warning; an unreadable root is an error.
pub fn scan(root: &Path, ignore: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, FilesError> {
    let mut out = Vec::new();
    std::fs::read_dir(root).map_err(|source| FilesError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    walk(root, root, ignore, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, ignore: &[PathBuf], out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "cannot read folder, skipped");
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if skipped(root, &path, ignore) {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, ignore, out),
            Ok(_) if is_config_file(&path) => match std::fs::read_to_string(&path) {
                Ok(s) => out.push((path, s)),
                Err(err) => {
                    tracing::warn!(file = %path.display(), %err, "cannot read file, skipped")
                }
            },
            _ => {}
        }
    }
}

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    /// Batches of changes, in the order they happened.
    pub changes: mpsc::Receiver<Vec<FileChange>>,
}

/// Watches `root` recursively; batches of changes arrive on
/// [`DirWatch::changes`]. Start it before [`scan`] so no change is missed.
pub fn watch(root: &Path, ignore: Vec<PathBuf>) -> Result<DirWatch, FilesError> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(PathBuf, Step)>();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                let Some(step) = step_of(&ev.kind) else {
                    return;
                };
                for p in ev.paths {
                    let _ = raw_tx.send((p, step));
                }
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|source| FilesError::Watch {
            path: root.to_path_buf(),
            source,
        })?;
    watcher
        .watch(root, RecursiveMode::Recursive)
        .map_err(|source| FilesError::Watch {
            path: root.to_path_buf(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(64);
    let root = root.to_path_buf();
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            let mut batch = Batch::default();
            batch.add(first);
            // Debounce: collect what arrives shortly after. Once every file touched was
            // closed after writing, or renamed into place, a short quiet spell is enough.
            loop {
                let quiet = if batch.writing.is_empty() {
                    SETTLED
                } else {
                    DEBOUNCE
                };
                match tokio::time::timeout(quiet, raw_rx.recv()).await {
                    Ok(Some(event)) => batch.add(event),
                    Ok(None) | Err(_) => break,
                }
            }
            let batch = resolve(&root, &ignore, batch.paths);
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    Ok(DirWatch {
        _watcher: watcher,
        changes: rx,
    })
}

/// How long to wait for more events once every file of a batch is complete.
pub const SETTLED: Duration = Duration::from_millis(1);

/// What an event says of its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Being written: its content may still be partial.
    Writing,
    /// Complete: closed after writing, renamed into place, or removed.
    Done,
}

/// The step an event stands for; `None` for events that change nothing. Reading a file is an
/// inotify event too (open/close, and atime as a metadata change): only content and structure
/// changes count, or our own reads would feed the watcher forever.
fn step_of(kind: &notify::EventKind) -> Option<Step> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Step::Done),
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => None,
        EventKind::Modify(ModifyKind::Name(
            RenameMode::To | RenameMode::From | RenameMode::Both,
        ))
        | EventKind::Remove(_) => Some(Step::Done),
        _ => Some(Step::Writing),
    }
}

/// Paths touched in one batch, and those still being written.
#[derive(Default)]
struct Batch {
    paths: BTreeSet<PathBuf>,
    writing: BTreeSet<PathBuf>,
}

impl Batch {
    fn add(&mut self, (path, step): (PathBuf, Step)) {
        match step {
            Step::Writing => {
                self.writing.insert(path.clone());
            }
            Step::Done => {
                self.writing.remove(&path);
            }
        }
        self.paths.insert(path);
    }
}

/// Turns touched paths into changes by looking at the file system now.
fn resolve(root: &Path, ignore: &[PathBuf], paths: BTreeSet<PathBuf>) -> Vec<FileChange> {
    let mut out = Vec::new();
    for p in paths {
        if skipped(root, &p, ignore) {
            continue;
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => {
                let mut files = Vec::new();
                walk(root, &p, ignore, &mut files);
                out.extend(files.into_iter().map(|(f, s)| FileChange::Changed(f, s)));
            }
            Ok(_) if is_config_file(&p) => match std::fs::read_to_string(&p) {
                Ok(s) => out.push(FileChange::Changed(p, s)),
                Err(_) => out.push(FileChange::Removed(p)),
            },
            Ok(_) => {}
            // Gone: a file or a whole folder (the consumer drops everything under it).
            Err(_) => out.push(FileChange::Removed(p)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(label: &str) -> Tmp {
            let p =
                std::env::temp_dir().join(format!("sluice-files-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tmp(p)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn config_files_are_recognised() {
        assert!(is_config_file(Path::new("a/b.yaml")));
        assert!(is_config_file(Path::new("b.json")));
        assert!(!is_config_file(Path::new("b.yaml~")));
        assert!(!is_config_file(Path::new(".b.yaml")));
        assert!(!is_config_file(Path::new("b.txt")));
    }

    #[test]
    fn a_batch_waits_while_a_file_is_being_written() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
        };
        let mut b = Batch::default();
        let (a, tmp) = (PathBuf::from("a.yaml"), PathBuf::from("a.yaml.tmp"));
        let mut see = |p: &PathBuf, kind: EventKind| {
            if let Some(step) = step_of(&kind) {
                b.add((p.clone(), step));
            }
            !b.writing.is_empty()
        };
        // Written in place: open until closed.
        assert!(see(&a, EventKind::Create(CreateKind::File)));
        assert!(see(
            &a,
            EventKind::Modify(ModifyKind::Data(DataChange::Any))
        ));
        // Reads and attribute changes say nothing.
        assert!(see(
            &a,
            EventKind::Access(AccessKind::Close(AccessMode::Read))
        ));
        assert!(!see(
            &a,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
        ));
        // Written aside and renamed into place: complete once renamed.
        assert!(see(&tmp, EventKind::Create(CreateKind::File)));
        assert!(see(
            &tmp,
            EventKind::Modify(ModifyKind::Data(DataChange::Any))
        ));
        assert!(see(&a, EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(!see(
            &tmp,
            EventKind::Modify(ModifyKind::Name(RenameMode::From))
        ));
        // A new folder may still be filling up.
        assert!(see(
            &PathBuf::from("new"),
            EventKind::Create(CreateKind::Folder)
        ));
        assert!(!see(
            &PathBuf::from("new"),
            EventKind::Remove(RemoveKind::Folder)
        ));
        assert_eq!(b.paths.len(), 3);
    }

    #[test]
    fn scan_reads_recursively_and_skips_ignored() {
        let t = Tmp::new("scan");
        std::fs::create_dir_all(t.0.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(t.0.join(".sluice")).unwrap();
        std::fs::write(t.0.join("a.yaml"), "a").unwrap();
        std::fs::write(t.0.join("sub/deeper/b.json"), "b").unwrap();
        std::fs::write(t.0.join(".sluice/state.yaml"), "s").unwrap();
        std::fs::write(t.0.join("notes.txt"), "n").unwrap();
        let files = scan(&t.0, &[t.0.join("ignored")]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|(p, _)| p.strip_prefix(&t.0).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            vec![PathBuf::from("a.yaml"), PathBuf::from("sub/deeper/b.json")]
        );
        assert!(scan(&t.0.join("missing"), &[]).is_err());
    }

    async fn next_batch(w: &mut DirWatch) -> Vec<FileChange> {
        tokio::time::timeout(Duration::from_secs(10), w.changes.recv())
            .await
            .expect("a batch within 10 s")
            .expect("watch open")
    }

    /// Collects batches until `done` holds for the union of changes seen.
    async fn until(w: &mut DirWatch, done: impl Fn(&[FileChange]) -> bool) -> Vec<FileChange> {
        let mut all = Vec::new();
        while !done(&all) {
            all.extend(next_batch(w).await);
        }
        all
    }

    #[tokio::test]
    async fn edits_in_existing_subfolders_are_seen_and_reads_cause_no_events() {
        let t = Tmp::new("sub");
        std::fs::create_dir_all(t.0.join("a/b")).unwrap();
        let f = t.0.join("a/b/x.yaml");
        std::fs::write(&f, "one").unwrap();
        let mut w = watch(&t.0, vec![]).unwrap();
        // Reading (as the scan does) must not report anything.
        assert_eq!(scan(&t.0, &[]).unwrap().len(), 1);
        // `sed -i`-style: temp file in the same folder, renamed over.
        std::fs::write(t.0.join("a/b/sedTMP"), "two").unwrap();
        std::fs::rename(t.0.join("a/b/sedTMP"), &f).unwrap();
        let seen = until(&mut w, |c| {
            c.contains(&FileChange::Changed(f.clone(), "two".into()))
        })
        .await;
        assert!(
            !seen
                .iter()
                .any(|c| matches!(c, FileChange::Changed(p, _) if p != &f)),
            "only the edited file is reported: {seen:?}"
        );
    }

    #[tokio::test]
    async fn watch_sees_create_edit_rename_delete_and_new_folders() {
        let t = Tmp::new("watch");
        let mut w = watch(&t.0, vec![t.0.join(".sluice")]).unwrap();
        let a = t.0.join("a.yaml");

        std::fs::write(&a, "one").unwrap();
        until(&mut w, |c| {
            c.contains(&FileChange::Changed(a.clone(), "one".into()))
        })
        .await;

        // Replace by rename, as editors and `kubectl`-style writers do.
        std::fs::write(t.0.join("a.yaml.tmp"), "two").unwrap();
        std::fs::rename(t.0.join("a.yaml.tmp"), &a).unwrap();
        until(&mut w, |c| {
            c.contains(&FileChange::Changed(a.clone(), "two".into()))
        })
        .await;

        // A new subfolder with a file in it.
        std::fs::create_dir_all(t.0.join("new/inner")).unwrap();
        let b = t.0.join("new/inner/b.yml");
        std::fs::write(&b, "bee").unwrap();
        until(&mut w, |c| {
            c.contains(&FileChange::Changed(b.clone(), "bee".into()))
        })
        .await;

        // Rename away and delete.
        let c = t.0.join("c.yaml");
        std::fs::rename(&a, &c).unwrap();
        until(&mut w, |ch| {
            ch.contains(&FileChange::Removed(a.clone()))
                && ch.contains(&FileChange::Changed(c.clone(), "two".into()))
        })
        .await;
        std::fs::remove_dir_all(t.0.join("new")).unwrap();
        until(&mut w, |ch| {
            ch.iter()
                .any(|x| matches!(x, FileChange::Removed(p) if b.starts_with(p)))
        })
        .await;

        // The state dir is ignored.
        std::fs::create_dir_all(t.0.join(".sluice")).unwrap();
        std::fs::write(t.0.join(".sluice/x.yaml"), "x").unwrap();
        std::fs::write(t.0.join("d.yaml"), "d").unwrap();
        let seen = until(&mut w, |ch| {
            ch.contains(&FileChange::Changed(t.0.join("d.yaml"), "d".into()))
        })
        .await;
        assert!(
            !seen.iter().any(
                |x| matches!(x, FileChange::Changed(p, _) if p.starts_with(t.0.join(".sluice")))
            )
        );
    }
}
