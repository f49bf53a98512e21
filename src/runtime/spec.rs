//! What the process runtime needs to know about a revision, independent of the Knative API
//! types, and the pure step from that to a command line and environment.

use std::path::PathBuf;

use sluice_autoscaler::RevisionKey;

use super::RuntimeError;
use super::expand::{expand, lookup_in};

/// Knative's default container port; informational here, as every instance gets its own port.
pub const DEFAULT_CONTAINER_PORT: u16 = 8080;

/// The variables Knative sets in every revision container. A revision's own `env` cannot
/// override them (Knative's webhook rejects such a revision; the runtime ignores the entry).
pub const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"];

/// How the runtime decides that an instance is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReadinessProbe {
    /// No probe in the container: a TCP connect to the instance's `PORT` (Knative's default).
    #[default]
    Default,
    /// `readinessProbe.httpGet`: a `GET` to `path` answered with a 2xx or 3xx status.
    HttpGet {
        /// The request path, e.g. `/healthz` (a missing leading `/` is added).
        path: String,
        /// The probe's port. `None` or the container port means the instance's own `PORT`;
        /// any other port is probed as given on 127.0.0.1 (and so is shared by all instances).
        port: Option<u16>,
    },
    /// `readinessProbe.tcpSocket`: a TCP connect.
    TcpSocket {
        /// The probe's port, with the same meaning as in [`ReadinessProbe::HttpGet`].
        port: Option<u16>,
    },
}

/// A revision as the process runtime runs it: one process per instance.
///
/// Build it with [`RevisionSpec::new`] and set the public fields. Values are already resolved
/// (no `valueFrom`); `$(VAR)` references are expanded by the runtime per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionSpec {
    /// The revision's namespace.
    pub namespace: String,
    /// The Knative Service that owns the revision (`K_SERVICE`); empty when there is none.
    pub service: String,
    /// The Configuration that created the revision (`K_CONFIGURATION`).
    pub configuration: String,
    /// The revision's name (`K_REVISION`), e.g. `hello-00001`.
    pub revision: String,
    /// `containers[0].command`: the program and its first arguments. Required: the standalone
    /// runtime runs commands, not images. A relative program path with a `/` is resolved in
    /// `working_dir`; a bare name is looked up on `PATH`.
    pub command: Vec<String>,
    /// `containers[0].args`, appended to `command`.
    pub args: Vec<String>,
    /// `containers[0].env`, in order. A value may refer to `PORT`, the `K_*` variables and
    /// variables defined earlier in the list with `$(NAME)`.
    pub env: Vec<(String, String)>,
    /// `containers[0].workingDir`; `None` runs in Sluice's own working directory.
    pub working_dir: Option<PathBuf>,
    /// `containers[0].ports[0].containerPort` (default 8080). Informational: each instance
    /// listens on its own loopback port, passed in `PORT`.
    pub container_port: u16,
    /// `containers[0].readinessProbe`.
    pub readiness: ReadinessProbe,
    /// `containerConcurrency`: the most requests one instance serves at once; 0 = unlimited.
    pub container_concurrency: u32,
}

impl RevisionSpec {
    /// A spec with no command yet, no service, configuration or env, container port 8080,
    /// the default readiness probe and unlimited concurrency.
    pub fn new(namespace: impl Into<String>, revision: impl Into<String>) -> Self {
        RevisionSpec {
            namespace: namespace.into(),
            service: String::new(),
            configuration: String::new(),
            revision: revision.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            container_port: DEFAULT_CONTAINER_PORT,
            readiness: ReadinessProbe::Default,
            container_concurrency: 0,
        }
    }

    /// The revision's `namespace/name` key.
    pub fn key(&self) -> RevisionKey {
        RevisionKey::new(&self.namespace, &self.revision)
    }

    /// Checks what the runtime cannot do without: a name and a command.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.revision.is_empty() || self.namespace.is_empty() {
            return Err(RuntimeError::InvalidSpec {
                revision: self.key(),
                reason: "the namespace and the revision name must not be empty".to_owned(),
            });
        }
        if self
            .command
            .first()
            .is_none_or(|program| program.is_empty())
        {
            return Err(RuntimeError::NoCommand {
                revision: self.key(),
            });
        }
        Ok(())
    }

    /// The environment of an instance listening on `port`: `PORT`, `K_SERVICE`,
    /// `K_CONFIGURATION`, `K_REVISION`, then the spec's `env` with `$(VAR)` expanded from the
    /// variables before it. Entries naming a reserved variable are skipped.
    ///
    /// Unlike Kubernetes, where Knative appends its variables after the user's, they come first
    /// here so that `env` values can use `$(PORT)` and `$(K_REVISION)`.
    pub fn container_env(&self, port: u16) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("PORT".to_owned(), port.to_string()),
            ("K_SERVICE".to_owned(), self.service.clone()),
            ("K_CONFIGURATION".to_owned(), self.configuration.clone()),
            ("K_REVISION".to_owned(), self.revision.clone()),
        ];
        for (name, value) in &self.env {
            if RESERVED_ENV.contains(&name.as_str()) {
                tracing::warn!(
                    revision = %self.key(),
                    variable = %name,
                    "ignoring env entry: {name} is a reserved environment variable set by the runtime"
                );
                continue;
            }
            let value = expand(value, |n| lookup_in(&vars, n));
            vars.push((name.clone(), value));
        }
        vars
    }

    /// The program and its arguments (`command` + `args`) with `$(VAR)` expanded from `env`
    /// (see [`RevisionSpec::container_env`]). `None` when there is no command.
    pub fn command_line(&self, env: &[(String, String)]) -> Option<(String, Vec<String>)> {
        if self.command.is_empty() {
            return None;
        }
        let mut words = self
            .command
            .iter()
            .chain(&self.args)
            .map(|word| expand(word, |n| lookup_in(env, n)));
        let program = words.next()?;
        Some((program, words.collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RevisionSpec {
        let mut spec = RevisionSpec::new("default", "hello-00001");
        spec.service = "hello".into();
        spec.configuration = "hello".into();
        spec.command = vec!["/bin/app".into(), "--port=$(PORT)".into()];
        spec.args = vec!["$(GREETING)".into(), "$$(PORT)".into(), "$(NOPE)".into()];
        spec.env = vec![
            ("TARGET".into(), "World".into()),
            ("GREETING".into(), "hi $(TARGET) from $(K_REVISION)".into()),
            ("PORT".into(), "1".into()),
            ("LATER".into(), "$(AFTER)".into()),
            ("AFTER".into(), "x".into()),
        ];
        spec
    }

    #[test]
    fn env_has_knative_variables_then_expanded_user_env() {
        let env = spec().container_env(41234);
        let want: Vec<(String, String)> = [
            ("PORT", "41234"),
            ("K_SERVICE", "hello"),
            ("K_CONFIGURATION", "hello"),
            ("K_REVISION", "hello-00001"),
            ("TARGET", "World"),
            ("GREETING", "hi World from hello-00001"),
            // A reference to a variable defined later stays as written, as in Kubernetes.
            ("LATER", "$(AFTER)"),
            ("AFTER", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn command_line_expands_from_the_whole_env() {
        let spec = spec();
        let env = spec.container_env(41234);
        let (program, args) = spec.command_line(&env).unwrap();
        assert_eq!(program, "/bin/app");
        assert_eq!(
            args,
            [
                "--port=41234",
                "hi World from hello-00001",
                "$(PORT)",
                "$(NOPE)"
            ]
        );
    }

    #[test]
    fn a_spec_without_command_is_rejected_with_a_clear_message() {
        let mut spec = spec();
        spec.command.clear();
        let err = spec.validate().unwrap_err();
        assert!(matches!(err, RuntimeError::NoCommand { .. }));
        assert_eq!(
            err.to_string(),
            "revision default/hello-00001: the standalone runtime runs commands, not images: \
             set containers[0].command"
        );
        spec.command = vec![String::new()];
        assert!(matches!(
            spec.validate(),
            Err(RuntimeError::NoCommand { .. })
        ));
        assert_eq!(spec.command_line(&[]).map(|(p, _)| p), Some(String::new()));
        spec.command.clear();
        assert_eq!(spec.command_line(&[]), None);
    }

    #[test]
    fn names_must_not_be_empty() {
        let mut spec = spec();
        spec.revision.clear();
        assert!(matches!(
            spec.validate(),
            Err(RuntimeError::InvalidSpec { .. })
        ));
        assert!(self::spec().validate().is_ok());
    }
}
