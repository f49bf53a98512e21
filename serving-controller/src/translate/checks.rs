//! What Envoy would refuse, caught before Envoy sees it.
//!
//! Knative's webhook validation ([`crate::ingress::validate`]) says nothing about the bytes in
//! hosts, paths and headers; Envoy does, and a response it NACKs holds back every KIngress in
//! it. So a KIngress is checked here, field by field, and one that Envoy would refuse is
//! reported (`Ready=False`, the field and the reason) and never sent:
//! - hosts: DNS names (letters, digits, `-`, `.`, `_`), at most 253 bytes;
//! - paths: empty or starting with `/`, no whitespace, control characters, `?` or `#`;
//! - header names (matches and `appendHeaders`): HTTP tokens (RFC 9110); `appendHeaders` may
//!   not set `Host` or pseudo-headers (Envoy refuses to);
//! - header values (matches and `appendHeaders`): no NUL, CR or LF;
//! - `rewriteHost`: a host, optionally with a port.

use std::collections::BTreeMap;

use super::TranslateError;
use crate::ingress::Ingress;

/// Longest DNS name.
const MAX_HOST: usize = 253;

/// Checks every host, path, header and `rewriteHost` of `ingress`; the first problem found.
pub(crate) fn check(ingress: &Ingress) -> Result<(), TranslateError> {
    let key = ingress.key();
    let bad = |field: String, value: &str, reason: &'static str| TranslateError::Unacceptable {
        ingress: key.clone(),
        field,
        value: shown(value),
        reason,
    };
    for (i, rule) in ingress.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, h) in rule.hosts.iter().enumerate() {
            if let Some(reason) = host_problem(h) {
                return Err(bad(format!("{at}.hosts[{j}]"), h, reason));
            }
        }
        let paths = rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default();
        for (j, p) in paths.iter().enumerate() {
            let at = format!("{at}.http.paths[{j}]");
            if let Some(reason) = path_problem(&p.path) {
                return Err(bad(format!("{at}.path"), &p.path, reason));
            }
            for (name, m) in &p.headers {
                let field = format!("{at}.headers[{name:?}]");
                if let Some(reason) = header_name_problem(name, true) {
                    return Err(bad(field, name, reason));
                }
                if let Some(reason) = header_value_problem(&m.exact) {
                    return Err(bad(format!("{field}.exact"), &m.exact, reason));
                }
            }
            append_headers(&p.append_headers, &format!("{at}.appendHeaders"), &bad)?;
            if !p.rewrite_host.is_empty()
                && let Some(reason) = rewrite_host_problem(&p.rewrite_host)
            {
                return Err(bad(format!("{at}.rewriteHost"), &p.rewrite_host, reason));
            }
            for (k, s) in p.splits.iter().enumerate() {
                append_headers(
                    &s.append_headers,
                    &format!("{at}.splits[{k}].appendHeaders"),
                    &bad,
                )?;
            }
        }
    }
    Ok(())
}

fn append_headers(
    headers: &BTreeMap<String, String>,
    at: &str,
    bad: &impl Fn(String, &str, &'static str) -> TranslateError,
) -> Result<(), TranslateError> {
    for (name, value) in headers {
        let field = format!("{at}[{name:?}]");
        if let Some(reason) = header_name_problem(name, false) {
            return Err(bad(field, name, reason));
        }
        if name.eq_ignore_ascii_case("host") {
            return Err(bad(
                field,
                name,
                "appendHeaders may not set Host (use rewriteHost)",
            ));
        }
        if let Some(reason) = header_value_problem(value) {
            return Err(bad(field, value, reason));
        }
    }
    Ok(())
}

/// An untrusted value as an error shows it: at most 128 bytes.
pub fn shown(v: &str) -> String {
    if v.len() <= 128 {
        return v.to_string();
    }
    let mut end = 128;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

fn host_problem(h: &str) -> Option<&'static str> {
    if h.len() > MAX_HOST {
        return Some("longer than a DNS name may be (253 bytes)");
    }
    if h.split('.').any(|label| label.len() > 63) {
        return Some("a DNS label is longer than 63 bytes");
    }
    if !h.is_empty()
        && !h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*' | b':' | b'/')
        })
    {
        // (`*`, `:` and `/` have their own messages: see the host check in translation.)
        return Some("a host may hold only letters, digits, '-', '.' and '_'");
    }
    None
}

fn path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        return None;
    }
    if !p.starts_with('/') {
        return Some("a path must start with '/'");
    }
    if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("a path may not hold whitespace or control characters");
    }
    if p.contains(['?', '#']) {
        return Some("a path may not hold a query ('?') or fragment ('#')");
    }
    None
}

/// RFC 9110 `token` characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name_problem(name: &str, pseudo_ok: bool) -> Option<&'static str> {
    let rest = match name.strip_prefix(':') {
        Some(_) if !pseudo_ok => {
            return Some("appendHeaders may not set pseudo-headers (':authority', ':path', …)");
        }
        Some(rest) => rest,
        None => name,
    };
    if rest.is_empty() {
        return Some("an empty header name");
    }
    if !rest.bytes().all(is_tchar) {
        return Some("a header name may hold only letters, digits and !#$%&'*+-.^_`|~");
    }
    None
}

fn header_value_problem(v: &str) -> Option<&'static str> {
    v.contains(['\0', '\r', '\n'])
        .then_some("a header value may not hold NUL, CR or LF")
}

fn rewrite_host_problem(h: &str) -> Option<&'static str> {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (h, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Some("rewriteHost's port is not a port number");
    }
    if host.is_empty()
        || host.len() > MAX_HOST
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Some("rewriteHost must be a DNS name (optionally with a port)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{HttpIngressPath, HttpIngressRuleValue, IngressRule, IngressSpec};

    fn ingress_with(path: HttpIngressPath, hosts: &[&str]) -> Ingress {
        let mut i = Ingress::default();
        i.metadata.name = Some("hello".into());
        i.metadata.namespace = Some("default".into());
        i.spec = IngressSpec {
            rules: vec![IngressRule {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                http: Some(HttpIngressRuleValue { paths: vec![path] }),
                ..Default::default()
            }],
            ..Default::default()
        };
        i
    }

    fn field_of(r: Result<(), TranslateError>) -> String {
        match r {
            Err(TranslateError::Unacceptable { field, .. }) => field,
            other => panic!("expected Unacceptable, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_ingresses_pass() {
        let mut p = HttpIngressPath {
            path: "/api/v1".into(),
            rewrite_host: "hello.default.svc.cluster.local:8080".into(),
            ..Default::default()
        };
        p.append_headers
            .insert("K-Original-Host".into(), "a.example.com".into());
        assert!(
            check(&ingress_with(
                p,
                &["hello.example.com", "hello.default.svc"]
            ))
            .is_ok()
        );
    }

    #[test]
    fn header_injection_is_refused_with_its_field() {
        let mut p = HttpIngressPath::default();
        p.append_headers
            .insert("X-Evil".into(), "a\r\nSet-Cookie: x".into());
        let f = field_of(check(&ingress_with(p, &["a.example.com"])));
        assert_eq!(f, "spec.rules[0].http.paths[0].appendHeaders[\"X-Evil\"]");
    }

    #[test]
    fn host_and_pseudo_headers_cannot_be_appended() {
        for name in ["Host", "host", ":authority", ":path", "bad name", ""] {
            let mut p = HttpIngressPath::default();
            p.append_headers.insert(name.into(), "x".into());
            let r = check(&ingress_with(p, &["a.example.com"]));
            assert!(r.is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn bad_paths_hosts_and_rewrite_hosts_are_refused() {
        let cases: Vec<(HttpIngressPath, &str, &str)> = vec![
            (
                HttpIngressPath {
                    path: "api".into(),
                    ..Default::default()
                },
                "a.example.com",
                "spec.rules[0].http.paths[0].path",
            ),
            (
                HttpIngressPath {
                    path: "/a b".into(),
                    ..Default::default()
                },
                "a.example.com",
                "spec.rules[0].http.paths[0].path",
            ),
            (
                HttpIngressPath {
                    rewrite_host: "evil\r\nhost".into(),
                    ..Default::default()
                },
                "a.example.com",
                "spec.rules[0].http.paths[0].rewriteHost",
            ),
            (
                HttpIngressPath::default(),
                "a\u{0}.example.com",
                "spec.rules[0].hosts[0]",
            ),
        ];
        for (p, host, want) in cases {
            assert_eq!(field_of(check(&ingress_with(p, &[host]))), want);
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert_eq!(
            field_of(check(&ingress_with(HttpIngressPath::default(), &[&long]))),
            "spec.rules[0].hosts[0]"
        );
    }

    #[test]
    fn match_headers_may_be_pseudo_but_values_are_checked() {
        let mut p = HttpIngressPath::default();
        p.headers.insert(
            ":authority".into(),
            crate::ingress::HeaderMatch {
                exact: "a.example.com".into(),
            },
        );
        assert!(check(&ingress_with(p.clone(), &["a.example.com"])).is_ok());
        p.headers.insert(
            "x-tag".into(),
            crate::ingress::HeaderMatch {
                exact: "a\nb".into(),
            },
        );
        assert_eq!(
            field_of(check(&ingress_with(p, &["a.example.com"]))),
            "spec.rules[0].http.paths[0].headers[\"x-tag\"].exact"
        );
    }
}
