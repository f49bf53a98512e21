//! Knative's ConfigMaps in `knative-serving`, same keys as upstream: `config-domain`,
//! `config-network` (domain and tag templates), `config-features` (tag header routing) and
//! `config-defaults` (revision timeouts, container concurrency).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Serialize};

use super::domains::Template;

/// Namespace holding Knative's ConfigMaps.
pub const SYSTEM_NAMESPACE: &str = "knative-serving";
/// The domain used when `config-domain` names none (standalone default).
pub const DEFAULT_DOMAIN: &str = "example.com";
/// `config-network` `domain-template` default.
pub const DEFAULT_DOMAIN_TEMPLATE: &str = "{{.Name}}.{{.Namespace}}.{{.Domain}}";
/// `config-network` `tag-template` default.
pub const DEFAULT_TAG_TEMPLATE: &str = "{{.Tag}}-{{.Name}}";

/// A value in a Knative ConfigMap that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{config_map}: invalid {key} {value:?}: {reason}")]
pub struct ConfigError {
    /// The ConfigMap (`config-network`, …).
    pub config_map: String,
    /// The key.
    pub key: String,
    /// The offending value.
    pub value: String,
    /// Why it is rejected.
    pub reason: String,
}

/// Everything the serving reconcilers read from Knative's ConfigMaps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServingConfig {
    /// `config-domain`.
    pub domain: DomainConfig,
    /// `config-network`.
    pub network: NetworkConfig,
    /// `config-features`.
    pub features: Features,
    /// `config-defaults`.
    pub defaults: Defaults,
    /// `config-gc`.
    #[serde(default)]
    pub gc: super::gc::GcConfig,
}

/// `config-domain`: domain suffixes, each with an optional label selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Domain → the labels a Route must carry to get it (empty = any Route).
    pub domains: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for DomainConfig {
    fn default() -> Self {
        Self::single(DEFAULT_DOMAIN)
    }
}

impl DomainConfig {
    /// One domain for every Route (`sluice up --domain`).
    pub fn single(domain: &str) -> Self {
        Self {
            domains: BTreeMap::from([(domain.to_string(), BTreeMap::new())]),
        }
    }

    /// Upstream's `LookupDomainForLabels`: the domain whose selector matches the labels with
    /// the most keys (ties: alphabetically first). `None` when no selector matches.
    pub fn lookup(&self, labels: &BTreeMap<String, String>) -> Option<&str> {
        let mut best: Option<(&str, usize)> = None;
        for (domain, selector) in &self.domains {
            if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            // Iteration is alphabetical, so only strictly more specific selectors win.
            if best.is_none_or(|(_, n)| selector.len() > n) {
                best = Some((domain, selector.len()));
            }
        }
        best.map(|(d, _)| d)
    }
}

/// The parts of `config-network` the Route reconciler uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// `domain-template`: external host of a Route (`{{.Name}}.{{.Namespace}}.{{.Domain}}`).
    pub domain_template: Template,
    /// `tag-template`: host name of a tag before the domain template (`{{.Tag}}-{{.Name}}`).
    pub tag_template: Template,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            domain_template: Template::parse(DEFAULT_DOMAIN_TEMPLATE)
                .unwrap_or_else(|_| Template::literal(DEFAULT_DOMAIN_TEMPLATE)),
            tag_template: Template::parse(DEFAULT_TAG_TEMPLATE)
                .unwrap_or_else(|_| Template::literal(DEFAULT_TAG_TEMPLATE)),
        }
    }
}

/// `config-features` flags Sluice honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// `tag-header-based-routing: enabled`: `Knative-Serving-Tag: <tag>` on the main host
    /// reaches the tag's target.
    pub tag_header_based_routing: bool,
    /// `multi-container` (enabled by default, as upstream): a template may hold sidecars
    /// besides its serving container (the one with the port). `sluice up` turns it off: it
    /// runs processes, which have no sidecars.
    #[serde(default = "enabled")]
    pub multi_container: bool,
}

fn enabled() -> bool {
    true
}

impl Default for Features {
    fn default() -> Self {
        Self {
            tag_header_based_routing: false,
            multi_container: true,
        }
    }
}

/// `config-defaults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    /// `revision-timeout-seconds` (300).
    pub revision_timeout_seconds: i64,
    /// `max-revision-timeout-seconds` (600).
    pub max_revision_timeout_seconds: i64,
    /// `revision-response-start-timeout-seconds` (unset).
    pub revision_response_start_timeout_seconds: Option<i64>,
    /// `revision-idle-timeout-seconds` (unset).
    pub revision_idle_timeout_seconds: Option<i64>,
    /// `container-concurrency` (0 = unlimited).
    pub container_concurrency: i64,
    /// `container-concurrency-max-limit` (1000).
    pub container_concurrency_max_limit: i64,
    /// `allow-container-concurrency-zero` (true).
    pub allow_container_concurrency_zero: bool,
    /// `container-name-template` (`user-container`; templates are not expanded).
    pub user_container_name: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            revision_timeout_seconds: 300,
            max_revision_timeout_seconds: 600,
            revision_response_start_timeout_seconds: None,
            revision_idle_timeout_seconds: None,
            container_concurrency: 0,
            container_concurrency_max_limit: 1000,
            allow_container_concurrency_zero: true,
            user_container_name: "user-container".to_string(),
        }
    }
}

impl ServingConfig {
    /// Defaults overlaid with every recognised ConfigMap in `knative-serving`; others are
    /// ignored.
    pub fn from_config_maps<'a>(
        maps: impl IntoIterator<Item = &'a ConfigMap>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        for cm in maps {
            if cm.metadata.namespace.as_deref() != Some(SYSTEM_NAMESPACE) {
                continue;
            }
            let empty = BTreeMap::new();
            let data = cm.data.as_ref().unwrap_or(&empty);
            cfg.apply(cm.metadata.name.as_deref().unwrap_or_default(), data)?;
        }
        Ok(cfg)
    }

    /// Applies one ConfigMap's data by its name (unknown names and keys are ignored).
    pub fn apply(
        &mut self,
        name: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), ConfigError> {
        match name {
            "config-domain" => self.domain = parse_domain(data)?,
            "config-network" => self.apply_network(data)?,
            "config-features" => {
                if let Some(v) = data.get("tag-header-based-routing") {
                    self.features.tag_header_based_routing =
                        parse_flag(name, "tag-header-based-routing", v)?;
                }
                if let Some(v) = data.get("multi-container").filter(|v| !v.trim().is_empty()) {
                    self.features.multi_container = parse_flag(name, "multi-container", v)?;
                }
            }
            "config-defaults" => self.apply_defaults(data)?,
            super::gc::CONFIG_GC => self.gc = super::gc::GcConfig::parse(data)?,
            _ => {}
        }
        Ok(())
    }

    fn apply_network(&mut self, data: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let cm = "config-network";
        for (key, needs) in [
            ("domain-template", &["Name", "Namespace"][..]),
            ("domainTemplate", &["Name", "Namespace"][..]),
            ("tag-template", &["Name", "Tag"][..]),
            ("tagTemplate", &["Name", "Tag"][..]),
        ] {
            let Some(v) = data.get(key) else { continue };
            let t = Template::parse(v).map_err(|e| invalid(cm, key, v, &e.to_string()))?;
            for field in needs {
                if !t.uses(field) {
                    return Err(invalid(cm, key, v, &format!("must use {{{{.{field}}}}}")));
                }
            }
            if key.starts_with("domain") {
                self.network.domain_template = t;
            } else {
                self.network.tag_template = t;
            }
        }
        // Older Knative kept the flag in config-network.
        if let Some(v) = data.get("tagHeaderBasedRouting") {
            self.features.tag_header_based_routing = parse_flag(cm, "tagHeaderBasedRouting", v)?;
        }
        Ok(())
    }

    fn apply_defaults(&mut self, data: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let d = &mut self.defaults;
        let int = |key: &str| -> Result<Option<i64>, ConfigError> {
            data.get(key)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|e| invalid("config-defaults", key, v, &e.to_string()))
                })
                .transpose()
        };
        if let Some(v) = int("revision-timeout-seconds")? {
            d.revision_timeout_seconds = v;
        }
        if let Some(v) = int("max-revision-timeout-seconds")? {
            d.max_revision_timeout_seconds = v;
        }
        if let Some(v) = int("revision-response-start-timeout-seconds")? {
            d.revision_response_start_timeout_seconds = Some(v);
        }
        if let Some(v) = int("revision-idle-timeout-seconds")? {
            d.revision_idle_timeout_seconds = Some(v);
        }
        if let Some(v) = int("container-concurrency")? {
            d.container_concurrency = v;
        }
        if let Some(v) = int("container-concurrency-max-limit")? {
            d.container_concurrency_max_limit = v;
        }
        if let Some(v) = data.get("allow-container-concurrency-zero") {
            d.allow_container_concurrency_zero = match v.trim() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(invalid(
                        "config-defaults",
                        "allow-container-concurrency-zero",
                        v,
                        "want true or false",
                    ));
                }
            };
        }
        if let Some(v) = data.get("container-name-template") {
            d.user_container_name = v.clone();
        }
        if d.revision_timeout_seconds > d.max_revision_timeout_seconds {
            return Err(invalid(
                "config-defaults",
                "revision-timeout-seconds",
                &d.revision_timeout_seconds.to_string(),
                "must not exceed max-revision-timeout-seconds",
            ));
        }
        Ok(())
    }
}

fn invalid(cm: &str, key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        config_map: cm.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_flag(cm: &str, key: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "enabled" => Ok(true),
        "disabled" | "" => Ok(false),
        _ => Err(invalid(cm, key, v, "want Enabled or Disabled")),
    }
}

/// `config-domain`: each key is a domain; its value is empty or a YAML `selector:` block of
/// `label: value` lines. `_example` is documentation and skipped. No key at all means the
/// default domain.
fn parse_domain(data: &BTreeMap<String, String>) -> Result<DomainConfig, ConfigError> {
    let mut domains = BTreeMap::new();
    for (domain, value) in data {
        if domain == "_example" {
            continue;
        }
        let selector = parse_selector(value)
            .map_err(|reason| invalid("config-domain", domain, value, &reason))?;
        domains.insert(domain.clone(), selector);
    }
    if domains.is_empty() {
        return Ok(DomainConfig::default());
    }
    Ok(DomainConfig { domains })
}

/// A minimal reader for the `selector:` YAML block upstream accepts (serde_yaml is not a
/// runtime dependency of this crate).
fn parse_selector(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut in_selector = false;
    for line in value.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let Some((k, v)) = trimmed.split_once(':') else {
            return Err(format!("cannot read line {trimmed:?}"));
        };
        let (k, v) = (unquote(k.trim()), unquote(v.trim()));
        if !indented {
            if k != "selector" || !(v.is_empty() || v == "{}") {
                return Err(format!("want a \"selector:\" block, got {trimmed:?}"));
            }
            in_selector = true;
        } else if in_selector {
            out.insert(k.to_string(), v.to_string());
        } else {
            return Err(format!("unexpected line {trimmed:?}"));
        }
    }
    Ok(out)
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn domain_selection() {
        let mut cfg = ServingConfig::default();
        cfg.apply(
            "config-domain",
            &map(&[
                ("example.com", ""),
                ("prod.example.com", "selector:\n  app: prod\n"),
                ("_example", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.domain.lookup(&map(&[])), Some("example.com"));
        assert_eq!(
            cfg.domain.lookup(&map(&[("app", "prod")])),
            Some("prod.example.com")
        );
        assert!(
            cfg.apply("config-domain", &map(&[("x.com", "nope")]))
                .is_err()
        );
    }

    #[test]
    fn network_features_defaults() {
        let mut cfg = ServingConfig::default();
        cfg.apply(
            "config-network",
            &map(&[("domain-template", "{{.Name}}-{{.Namespace}}.{{.Domain}}")]),
        )
        .unwrap();
        cfg.apply(
            "config-features",
            &map(&[("tag-header-based-routing", "Enabled")]),
        )
        .unwrap();
        cfg.apply(
            "config-defaults",
            &map(&[
                ("revision-timeout-seconds", "30"),
                ("container-concurrency", "5"),
            ]),
        )
        .unwrap();
        assert!(cfg.features.tag_header_based_routing);
        assert_eq!(cfg.defaults.revision_timeout_seconds, 30);
        assert_eq!(cfg.defaults.container_concurrency, 5);
        let err = cfg
            .apply(
                "config-network",
                &map(&[("domain-template", "{{.Name}}.{{.Domain}}")]),
            )
            .unwrap_err();
        assert_eq!(err.reason, "must use {{.Namespace}}");
    }
}
