//! Predictive Revisions' histories on disk: `STATE_DIR/autoscaler/<namespace>/<configuration>/
//! <revision>.json`, written once a minute and at shutdown (a temporary file renamed over the
//! old one), bounded to [`sluice_autoscaler::predict::HISTORY_MINUTES`] minutes (about 60 KB).
//!
//! A new Revision of a Configuration has no history of its own; it starts from the most
//! recently written history of the same Configuration (the Revision it replaces), so a deploy
//! does not cost a week of forecasts. A history kept in another metric is not used.
//!
//! The file: `{"version": 1, "metric": "concurrency", "history": {"start": <unix minute of
//! values[0]>, "values": [<the minute's figure (90th percentile of its seconds), or null>, …],
//! "open": null | {"minute": …, "observations": [<this minute's seconds so far>]}}}` (an
//! older file's `"peak"` is ignored: that minute starts afresh).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_autoscaler::History;
use sluice_serving::serving::Key;

/// Under the state directory: the predictive histories.
pub const HISTORY_DIR: &str = "autoscaler";

/// The format version written.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    metric: String,
    history: History,
}

/// Where a Revision's history lives.
pub fn path(state_dir: &Path, revision: &Key, configuration: &str) -> PathBuf {
    let configuration = if configuration.is_empty() {
        "_"
    } else {
        configuration
    };
    state_dir
        .join(HISTORY_DIR)
        .join(&revision.namespace)
        .join(configuration)
        .join(format!("{}.json", revision.name))
}

/// The history of a Revision (or, when it has none, the newest of its Configuration), and the
/// metric it is in. Unreadable files are skipped with a warning.
pub fn load(state_dir: &Path, revision: &Key, configuration: &str) -> Option<(String, History)> {
    let own = path(state_dir, revision, configuration);
    if let Some(h) = read(&own) {
        return Some(h);
    }
    let dir = own.parent()?;
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max_by_key(|(modified, _)| *modified)?;
    let inherited = read(&newest.1)?;
    tracing::info!(revision = %revision, from = %newest.1.display(), "predictive history inherited from the configuration's previous revision");
    Some(inherited)
}

fn read(path: &Path) -> Option<(String, History)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read a predictive history");
            return None;
        }
    };
    match serde_json::from_slice::<File>(&bytes) {
        Ok(f) if f.version == VERSION => {
            let mut h = f.history;
            h.trim();
            Some((f.metric, h))
        }
        Ok(f) => {
            tracing::warn!(file = %path.display(), version = f.version, "predictive history of an unknown version: ignored");
            None
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "not a predictive history: ignored");
            None
        }
    }
}

/// The bytes of a history file.
pub fn encode(metric: &str, history: &History) -> Vec<u8> {
    let file = File {
        version: VERSION,
        metric: metric.to_owned(),
        history: history.clone(),
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Writes history files atomically (blocking: run it off the event loop).
pub fn write_all(files: Vec<(PathBuf, Vec<u8>)>) {
    for (path, bytes) in files {
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write a predictive history");
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn history(minutes: i64, value: f64) -> History {
        let mut h = History::new();
        for m in 0..minutes {
            h.record(Timestamp::from_second(m * 60).unwrap(), value);
        }
        h
    }

    #[test]
    fn written_histories_read_back_and_new_revisions_inherit() {
        let dir = std::env::temp_dir().join(format!("sluice-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let one = Key::new("default", "hello-00001");
        let two = Key::new("default", "hello-00002");
        assert_eq!(load(&dir, &one, "hello"), None);
        let h = history(10, 3.0);
        write_all(vec![(path(&dir, &one, "hello"), encode("concurrency", &h))]);
        assert_eq!(
            load(&dir, &one, "hello"),
            Some(("concurrency".into(), h.clone()))
        );
        // The next revision of the configuration starts from it.
        assert_eq!(load(&dir, &two, "hello"), Some(("concurrency".into(), h)));
        // Another configuration does not.
        assert_eq!(
            load(&dir, &Key::new("default", "other-00001"), "other"),
            None
        );
        // Garbage is ignored.
        std::fs::write(path(&dir, &one, "hello"), b"{not json").unwrap();
        std::fs::remove_file(path(&dir, &two, "hello")).ok();
        assert_eq!(read(&path(&dir, &one, "hello")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
