//! Test certificates made with the `openssl` command (Debian package `openssl`): a CA and the
//! certificates it signs, EC P-256, valid two days.

use std::path::Path;

/// Runs `openssl args` in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `dir/ca.crt` + `ca.key` (CN `common_name`) and, for each `(name, subject_alt_name)`
/// (e.g. `("server", "DNS:localhost,IP:127.0.0.1")`), `dir/name.crt` + `name.key` signed by
/// that CA.
pub fn ca_and_certificates(dir: &Path, common_name: &str, certs: &[(&str, &str)]) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subject = format!("/CN={common_name}");
    let mut ca = vec![
        "req", "-x509", "-days", "2", "-subj", &subject, "-keyout", "ca.key", "-out", "ca.crt",
    ];
    ca.extend(ec);
    openssl(dir, &ca);
    for (name, san) in certs {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={name}");
        let mut req = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(dir, &req);
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n"))
            .expect("writing the extension file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
    }
}
