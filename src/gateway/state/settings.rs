//! `config-kourier` in the gateway's core: read from its ConfigMap (a file under `--dir` or
//! `sluice up`'s directory, or the cluster's under `--kube`), applied live, and on a bad value
//! reported while the last good configuration keeps serving.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_serving::kourier::{self, CONFIG_KOURIER, KourierConfig, KourierEnv, SYSTEM_NAMESPACE};
use sluice_serving::translate::{ConfigProblem, internal_tls};

use super::GatewayState;
use crate::gateway::documents::{Object, ObjectKey};

/// How the configuration was taken.
#[derive(Debug)]
pub(crate) struct Settings {
    env: KourierEnv,
    /// The last refusal of the ConfigMap (the previous configuration is in force).
    error: Option<kourier::KourierConfigError>,
    /// What the last parse noticed.
    notes: Vec<(String, String)>,
    /// Settings that could not take effect (a default certificate's Secret missing, …).
    pub(crate) problems: Vec<ConfigProblem>,
    /// Whether the ConfigMap exists (else: every default).
    present: bool,
    /// The last refusal of `config-network` (the previous setting is in force).
    network_error: Option<String>,
}

impl Settings {
    pub(crate) fn new(env: KourierEnv) -> Self {
        Self {
            env,
            error: None,
            notes: Vec::new(),
            problems: Vec::new(),
            present: false,
            network_error: None,
        }
    }
}

/// `config-kourier` as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// Whether the ConfigMap exists (absent: every key at Kourier's default).
    pub present: bool,
    /// Every key with the value in force.
    pub values: BTreeMap<String, String>,
    /// Why the last version of the ConfigMap was refused (the previous one stays in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys noted (accepted without effect, or replaced): `key: note`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Settings in force that could not take effect: `key: problem`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl GatewayState {
    /// A ConfigMap changed (`None`: deleted). Returns whether the configuration in force
    /// changed (so every KIngress is translated again).
    pub(super) fn config_map_changed(&mut self, key: &ObjectKey, o: Option<Object>) -> bool {
        if key.namespace == SYSTEM_NAMESPACE && key.name == internal_tls::CONFIG_NETWORK {
            return self.config_network_changed(o);
        }
        if key.namespace != SYSTEM_NAMESPACE || key.name != CONFIG_KOURIER {
            return false;
        }
        let data = match &o {
            Some(Object::ConfigMap(c)) => c.data.clone().unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        self.settings.present = o.is_some();
        match kourier::parse(&data, &self.settings.env, SYSTEM_NAMESPACE) {
            Ok((config, notes)) => {
                self.settings.error = None;
                self.settings.notes = notes.notes;
                for (k, n) in &self.settings.notes {
                    tracing::warn!(key = %k, "config-kourier: {n}");
                }
                if config == self.config.kourier {
                    return false;
                }
                tracing::info!("config-kourier applied");
                self.config.kourier = config;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "config-kourier refused; the previous configuration keeps serving");
                self.settings.error = Some(e);
                false
            }
        }
    }

    /// `config-network` changed: Knative's `system-internal-tls` (the only key the gateway
    /// reads there). A bad value is reported and the previous setting stays.
    fn config_network_changed(&mut self, o: Option<Object>) -> bool {
        let data = match &o {
            Some(Object::ConfigMap(c)) => c.data.clone().unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        match internal_tls::enabled(&data) {
            Ok(on) => {
                self.settings.network_error = None;
                if on == self.config.internal_tls {
                    return false;
                }
                tracing::info!(enabled = on, "config-network: system-internal-tls applied");
                self.config.internal_tls = on;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "config-network refused; the previous setting keeps serving");
                self.settings.network_error = Some(format!("config-network: {e}"));
                false
            }
        }
    }

    /// `config-kourier` as `/status` shows it.
    pub fn config_status(&self) -> ConfigStatus {
        let mut values = values(&self.config.kourier);
        values.insert(
            format!(
                "{}/{}",
                internal_tls::CONFIG_NETWORK,
                internal_tls::SYSTEM_INTERNAL_TLS
            ),
            if self.config.internal_tls {
                "enabled"
            } else {
                "disabled"
            }
            .into(),
        );
        ConfigStatus {
            present: self.settings.present,
            values,
            error: self.settings.error.as_ref().map(ToString::to_string),
            notes: self
                .settings
                .notes
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect(),
            problems: self
                .settings
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .chain(self.settings.network_error.clone())
                .collect(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &sluice_serving::GatewayConfig {
        &self.config
    }
}

/// Every key with its value in force, as an operator would write it.
fn values(k: &KourierConfig) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        v.insert(key.to_string(), value);
    };
    put(
        "enable-service-access-logging",
        k.access_logging.to_string(),
    );
    put(
        "service-access-log-template",
        k.access_log_template
            .clone()
            .unwrap_or_else(|| "(Envoy's default format)".into()),
    );
    put("enable-proxy-protocol", k.proxy_protocol.to_string());
    put(
        "cluster-cert-secret",
        k.cluster_cert_secret
            .as_ref()
            .map_or(String::new(), |s| format!("{}/{}", s.namespace, s.name)),
    );
    put(
        "stream-idle-timeout",
        format!("{}s", k.stream_idle_timeout.as_secs_f64()),
    );
    put("trusted-hops-count", k.trusted_hops.to_string());
    put(
        "use-remote-address",
        (k.use_remote_address || k.proxy_protocol).to_string(),
    );
    put("cipher-suites", k.cipher_suites.join(","));
    put("enable-cryptomb", k.cryptomb.to_string());
    put(
        "listen-ip-addresses",
        k.listen_ips
            .as_ref()
            .map_or("(the listener flags' addresses)".into(), |ips| {
                ips.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }),
    );
    match &k.tracing {
        Some(t) => {
            put("tracing-endpoint", t.endpoint.clone());
            put(
                "tracing-protocol",
                match t.protocol {
                    kourier::TracingProtocol::Grpc => "grpc".into(),
                    kourier::TracingProtocol::HttpProtobuf => "http/protobuf".into(),
                },
            );
            put("tracing-sampling-rate", t.sampling_rate.to_string());
            put("tracing-service-name", t.service_name.clone());
        }
        None => put("tracing-endpoint", String::new()),
    }
    match &k.ext_authz {
        Some(a) => {
            put("extauthz-host", format!("{}:{}", a.host, a.port));
            put("extauthz-protocol", a.protocol.as_str().into());
            put(
                "extauthz-failure-mode-allow",
                a.failure_mode_allow.to_string(),
            );
            put(
                "extauthz-max-request-body-bytes",
                a.max_request_bytes.to_string(),
            );
            put("extauthz-timeout", a.timeout.as_millis().to_string());
            put("extauthz-path-prefix", a.path_prefix.clone());
            put("extauthz-pack-as-bytes", a.pack_as_bytes.to_string());
        }
        None => put("extauthz-host", String::new()),
    }
    put(
        "disable-envoy-server-header",
        k.disable_server_header.to_string(),
    );
    let (name, namespace) = k
        .default_cert
        .as_ref()
        .map_or((String::new(), String::new()), |s| {
            (s.name.clone(), s.namespace.clone())
        });
    put("certs-secret-name", name);
    put("certs-secret-namespace", namespace);
    v
}
