//! Reserved instances: extra instances of a revision that run at idle instead of zero (see
//! `sluice_autoscaler::reserve`). They run the revision's command with `SLUICE_RESERVED_INSTANCE=true`
//! in their environment, their own `args` when the revision gives some
//! (`sluice.knative.dev/reserve-instance-args`), and at a lower CPU priority: the command is
//! started through `nice -n 10` (raising one's niceness needs no privilege; the whole process
//! group, threads and children inherit it). Where no `nice` program is found they run at
//! normal priority, with a warning.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sluice_autoscaler::RevisionKey;

use super::{ProcessRuntime, RevisionSpec, RuntimeError, lock};

/// The variable set to `true` in a reserved instance's environment.
pub const RESERVED_INSTANCE_ENV: &str = "SLUICE_RESERVED_INSTANCE";

/// The niceness reserved instances run at (0 is normal, 19 the lowest priority).
pub const RESERVED_NICE: u8 = 10;

/// How a revision's reserved instances differ from its standard ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReservedSpec {
    /// Arguments replacing the container's `args`.
    pub args: Option<Vec<String>>,
}

impl ReservedSpec {
    /// The program and arguments of a reserved instance of `spec`: its command with these
    /// `args` (if any), `$(VAR)` expanded from `env`, behind `nice -n 10` when there is a
    /// `nice` program.
    pub fn command_line(
        &self,
        spec: &RevisionSpec,
        env: &[(String, String)],
    ) -> Option<(String, Vec<String>)> {
        let (program, args) = match &self.args {
            Some(args) => RevisionSpec {
                args: args.clone(),
                ..spec.clone()
            }
            .command_line(env)?,
            None => spec.command_line(env)?,
        };
        match nice_program() {
            Some(nice) => {
                let mut words = vec!["-n".to_owned(), RESERVED_NICE.to_string(), program];
                words.extend(args);
                Some((nice.display().to_string(), words))
            }
            None => Some((program, args)),
        }
    }
}

/// `nice` on `PATH` (or in `/usr/bin`, `/bin`), looked up once.
fn nice_program() -> Option<&'static Path> {
    static NICE: OnceLock<Option<PathBuf>> = OnceLock::new();
    NICE.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
            .map(|d| d.join("nice"))
            .find(|p| p.is_file());
        if found.is_none() {
            tracing::warn!(
                "no `nice` program found: reserved instances run at normal CPU priority"
            );
        }
        found
    })
    .as_deref()
}

impl ProcessRuntime {
    /// Makes `revision` run `count` reserved instances as `reserved` says: starts new ones or
    /// stops the surplus (not-ready ones first, then the newest); changed settings replace
    /// them. The revision must have been given a spec with [`ProcessRuntime::ensure`].
    ///
    /// Stopping takes an instance out of the ready set at once: call this once the reserved
    /// instance holds no request any more (the caller routes requests, so it knows).
    pub async fn ensure_reserved(
        &self,
        revision: &RevisionKey,
        count: u32,
        reserved: ReservedSpec,
    ) -> Result<(), RuntimeError> {
        let mut revisions = lock(&self.inner.revisions);
        let Some(rev) = revisions.get_mut(revision) else {
            return Err(RuntimeError::InvalidSpec {
                revision: revision.clone(),
                reason: "reserved instances asked for before the revision's spec".to_owned(),
            });
        };
        if *rev.reserved_spec != reserved {
            for handle in rev.reserved.drain(..) {
                self.mark_stopping(revision, handle.index);
                drop(handle.stop());
            }
            rev.reserved_spec = Arc::new(reserved);
        }
        let want = usize::try_from(count).unwrap_or(usize::MAX);
        if rev.reserved.len() > want {
            let statuses = self.inner.board.instances(revision);
            let ready = |index: u32| statuses.iter().any(|s| s.index == index && s.ready);
            rev.reserved
                .sort_by_key(|h| (std::cmp::Reverse(ready(h.index)), h.index));
            for handle in rev.reserved.split_off(want) {
                tracing::info!(revision = %revision, index = handle.index, "stopping reserved instance");
                self.mark_stopping(revision, handle.index);
                drop(handle.stop());
            }
            rev.reserved.sort_by_key(|h| h.index);
        }
        while rev.reserved.len() < want {
            let port = self
                .inner
                .board
                .reserve_port()
                .map_err(|source| RuntimeError::NoPort {
                    revision: revision.clone(),
                    source,
                })?;
            let index = self.next_index(revision);
            tracing::info!(revision = %revision, index, "starting reserved instance");
            let handle = self.start(&rev.spec, Some(&rev.reserved_spec), index, port);
            rev.reserved.push(handle);
        }
        Ok(())
    }

    /// How many reserved instances `revision` runs (asked for, ready or not).
    pub fn reserved_count(&self, revision: &RevisionKey) -> u32 {
        lock(&self.inner.revisions)
            .get(revision)
            .map_or(0, |r| u32::try_from(r.reserved.len()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_command_lines_run_niced_with_their_own_args() {
        let mut spec = RevisionSpec::new("default", "hello-00001");
        spec.command = vec!["python3".into(), "app.py".into()];
        spec.args = vec!["--heap=$(HEAP)".into()];
        let env = vec![("HEAP".to_owned(), "1g".to_owned())];
        let standard = ReservedSpec::default();
        let (program, args) = standard.command_line(&spec, &env).unwrap();
        let nice = nice_program().expect("coreutils' nice on this machine");
        assert_eq!(program, nice.display().to_string());
        assert_eq!(args, ["-n", "10", "python3", "app.py", "--heap=1g"]);
        let small = ReservedSpec {
            args: Some(vec!["--heap=64m".into()]),
        };
        let (_, args) = small.command_line(&spec, &env).unwrap();
        assert_eq!(args, ["-n", "10", "python3", "app.py", "--heap=64m"]);
    }
}
