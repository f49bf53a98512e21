//! Host names of a Route (knative/serving `pkg/reconciler/route/domains`).
//!
//! A target's host name is the Route name, or for a tag the `tag-template` rendering
//! (`{{.Tag}}-{{.Name}}`). Externally it becomes the `domain-template` rendering
//! (`{{.Name}}.{{.Namespace}}.{{.Domain}}`) with the domain from `config-domain`; inside the
//! cluster it is always `{name}.{ns}.svc.cluster.local`, also reachable as `{name}.{ns}` and
//! `{name}.{ns}.svc`.
//!
//! Templates are Go `text/template`s upstream; Sluice reads the subset Knative documents:
//! `{{.Name}}`, `{{.Namespace}}`, `{{.Domain}}`, `{{.Tag}}` and
//! `{{index .Annotations "key"}}` / `{{index .Labels "key"}}`. Anything else is rejected when
//! the ConfigMap is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::dns1123_subdomain;

/// The cluster's DNS suffix.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// A template that cannot be read, or a host name that is not a valid domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template uses something other than the supported fields.
    #[error("unsupported template action {0:?}")]
    Unsupported(String),
    /// `{{` without `}}`.
    #[error("unterminated template action")]
    Unterminated,
    /// The rendered host is not a valid DNS name.
    #[error("invalid domain name {host:?}: {reason}")]
    InvalidHost {
        /// The rendered host.
        host: String,
        /// Kubernetes' message.
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Namespace,
    Domain,
    Tag,
    Label(String),
    Annotation(String),
}

/// A parsed `domain-template` / `tag-template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl TryFrom<String> for Template {
    type Error = TemplateError;
    fn try_from(s: String) -> Result<Self, TemplateError> {
        Template::parse(&s)
    }
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.source
    }
}

/// What a template may refer to.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    /// `.Name`.
    pub name: &'a str,
    /// `.Namespace`.
    pub namespace: &'a str,
    /// `.Domain`.
    pub domain: &'a str,
    /// `.Tag`.
    pub tag: &'a str,
    /// `.Labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `.Annotations`.
    pub annotations: &'a BTreeMap<String, String>,
}

impl Template {
    /// Parses the supported subset of Go template syntax.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unterminated)?;
            parts.push(action(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// A template that renders `text` verbatim.
    pub fn literal(text: &str) -> Self {
        Self {
            source: text.to_string(),
            parts: vec![Part::Text(text.to_string())],
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template refers to `.{field}` (`Name`, `Namespace`, `Domain`, `Tag`).
    pub fn uses(&self, field: &str) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                (p, field),
                (Part::Name, "Name")
                    | (Part::Namespace, "Namespace")
                    | (Part::Domain, "Domain")
                    | (Part::Tag, "Tag")
            )
        })
    }

    /// Renders the template (missing labels / annotations render empty, as Go's `index`).
    pub fn render(&self, v: &TemplateValues<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Name => out.push_str(v.name),
                Part::Namespace => out.push_str(v.namespace),
                Part::Domain => out.push_str(v.domain),
                Part::Tag => out.push_str(v.tag),
                Part::Label(k) => out.push_str(v.labels.get(k).map_or("", String::as_str)),
                Part::Annotation(k) => {
                    out.push_str(v.annotations.get(k).map_or("", String::as_str))
                }
            }
        }
        out
    }
}

fn action(a: &str) -> Result<Part, TemplateError> {
    match a {
        ".Name" => return Ok(Part::Name),
        ".Namespace" => return Ok(Part::Namespace),
        ".Domain" => return Ok(Part::Domain),
        ".Tag" => return Ok(Part::Tag),
        _ => {}
    }
    let words: Vec<&str> = a.split_whitespace().collect();
    if let ["index", map, key] = words.as_slice() {
        let key = key
            .strip_prefix('"')
            .and_then(|k| k.strip_suffix('"'))
            .ok_or_else(|| TemplateError::Unsupported(a.to_string()))?;
        match *map {
            ".Labels" => return Ok(Part::Label(key.to_string())),
            ".Annotations" => return Ok(Part::Annotation(key.to_string())),
            _ => {}
        }
    }
    Err(TemplateError::Unsupported(a.to_string()))
}

/// Checks a rendered host as upstream's `IsFullyQualifiedDomainName`: a DNS subdomain with at
/// least two labels.
pub fn check_host(host: &str) -> Result<(), TemplateError> {
    let mut errs = dns1123_subdomain(host);
    if !host.contains('.') {
        errs.push("should be a domain with at least two segments separated by dots".into());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(TemplateError::InvalidHost {
            host: host.to_string(),
            reason: errs.join(", "),
        })
    }
}

/// `{name}.{ns}.svc.cluster.local`.
pub fn cluster_local_domain(host_name: &str, namespace: &str) -> String {
    format!("{host_name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// The names a cluster-local host answers to, sorted: `{name}.{ns}`, `{name}.{ns}.svc`,
/// `{name}.{ns}.svc.cluster.local`.
pub fn cluster_local_hosts(host_name: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{host_name}.{namespace}"),
        format!("{host_name}.{namespace}.svc"),
        cluster_local_domain(host_name, namespace),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let none = BTreeMap::new();
        let v = TemplateValues {
            name: "hello",
            namespace: "default",
            domain: "example.com",
            tag: "v1",
            labels: &labels,
            annotations: &none,
        };
        let t =
            Template::parse("{{ .Name }}.{{.Namespace}}.{{index .Labels \"team\"}}.{{.Domain}}")
                .unwrap();
        assert_eq!(t.render(&v), "hello.default.a.example.com");
        assert!(t.uses("Name") && !t.uses("Tag"));
        assert_eq!(
            Template::parse("{{.Name}}{{if .X}}"),
            Err(TemplateError::Unsupported("if .X".into()))
        );
        assert_eq!(Template::parse("{{.Name"), Err(TemplateError::Unterminated));
        assert!(check_host("hello.default.example.com").is_ok());
        assert!(check_host("Hello.default").is_err());
        assert!(check_host("hello").is_err());
    }
}
