//! The fake API server's objects and request parsing (see `fake_api.rs`).

use std::collections::BTreeMap;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use crate::fake_api::Write;

#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<String, Value>,
    pub writes: Vec<Write>,
    pub next_uid: u64,
    pub resource_version: u64,
    /// Requests seen (any kind): the test waits for this to stop moving.
    pub requests: u64,
    /// Writes to fail once each: method, path, status code.
    pub faults: Vec<(http::Method, String, u16)>,
}

/// Where an object of `apiVersion`/`kind` lives: the API prefix and the plural.
fn resource_of(api_version: &str, kind: &str) -> (String, &'static str) {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let plural = match kind {
        "Service" => "services",
        "Configuration" => "configurations",
        "Revision" => "revisions",
        "Route" => "routes",
        "Ingress" => "ingresses",
        "EndpointSlice" => "endpointslices",
        "ConfigMap" => "configmaps",
        "Deployment" => "deployments",
        "Pod" => "pods",
        "HorizontalPodAutoscaler" => "horizontalpodautoscalers",
        "Event" => "events",
        other => panic!("fake API: no plural for kind {other}"),
    };
    (prefix, plural)
}

/// The path of an object (from its apiVersion, kind, namespace and name).
pub fn path_of(object: &Value) -> String {
    let (prefix, plural) = resource_of(
        object["apiVersion"].as_str().unwrap_or_default(),
        object["kind"].as_str().unwrap_or_default(),
    );
    format!(
        "{prefix}/namespaces/{}/{plural}/{}",
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// A parsed request path.
pub struct Target {
    pub prefix: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub status: bool,
}

impl Target {
    pub fn parse(path: &str) -> Target {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (prefix, rest) = if segments[0] == "api" {
            (format!("/api/{}", segments[1]), &segments[2..])
        } else {
            (
                format!("/apis/{}/{}", segments[1], segments[2]),
                &segments[3..],
            )
        };
        let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        Target {
            prefix,
            namespace,
            plural: rest[0].to_string(),
            name: rest.get(1).map(|s| s.to_string()),
            status: rest.get(2) == Some(&"status"),
        }
    }

    pub fn object_path(&self, name: &str) -> String {
        format!(
            "{}/namespaces/{}/{}/{name}",
            self.prefix,
            self.namespace.as_deref().unwrap_or_default(),
            self.plural
        )
    }

    /// Whether an object at `path` is in this collection.
    pub fn covers(&self, path: &str) -> bool {
        let other = Target::parse(path);
        other.prefix == self.prefix
            && other.plural == self.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| other.namespace.as_ref() == Some(ns))
    }
}

pub fn decode(component: &str) -> String {
    let mut out = Vec::new();
    let bytes = component.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&component[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    respond(
        StatusCode::from_u16(code).expect("code"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "code": code, "message": message}),
    )
}

pub fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let labels = &object["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => !labels[term].is_null(),
        }
    })
}

impl Store {
    pub fn stamp_new(&mut self, object: &mut Value) {
        self.next_uid += 1;
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}", self.next_uid));
        }
        if object["metadata"]["generation"].is_null() {
            object["metadata"]["generation"] = json!(1);
        }
        self.stamp_version(object);
    }

    pub fn stamp_version(&mut self, object: &mut Value) {
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
    }

    /// Stores `object` as a user or controller would apply it; returns it as stored.
    pub fn put(&mut self, path: &str, mut object: Value) -> Value {
        match self.objects.get(path) {
            None => self.stamp_new(&mut object),
            Some(old) => {
                let old = old.clone();
                for field in ["uid", "creationTimestamp"] {
                    if !old["metadata"][field].is_null() {
                        object["metadata"][field] = old["metadata"][field].clone();
                    }
                }
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = object.get("spec") != old.get("spec");
                object["metadata"]["generation"] =
                    json!(if changed { generation + 1 } else { generation });
                if object.get("status").is_none() && !old["status"].is_null() {
                    object["status"] = old["status"].clone();
                }
                self.stamp_version(&mut object);
            }
        }
        self.objects.insert(path.to_string(), object.clone());
        object
    }
}
