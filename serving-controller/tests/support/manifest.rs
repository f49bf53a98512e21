//! Checks shared by the manifest tests (`deploy/ingress`, `deploy/full`): a YAML document
//! must survive a round trip through its typed k8s-openapi object, so a misspelt or unknown
//! field fails the test instead of being dropped silently.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `value` as `T` and checks that serializing it back gives `value` again.
pub fn typed<T: DeserializeOwned + serde::Serialize>(value: &Value, at: &str) -> T {
    let object: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{at}: does not parse: {e}"));
    let back = serde_json::to_value(&object).expect("serializes");
    if let Some(path) = difference(value, &back, String::new()) {
        panic!(
            "{at}: `{path}` is lost in a round trip through the typed object: \
             a misspelt or unknown field, or a value of the wrong type"
        );
    }
    object
}

/// The first place (`/spec/template/...`) where `written` and `understood` differ.
pub fn difference(written: &Value, understood: &Value, path: String) -> Option<String> {
    match (written, understood) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .find_map(|(k, v)| match b.get(k) {
                Some(w) => difference(v, w, format!("{path}/{k}")),
                None => Some(format!("{path}/{k}")),
            })
            .or_else(|| {
                b.keys()
                    .find(|k| !a.contains_key(*k))
                    .map(|k| format!("{path}/{k}"))
            }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| difference(v, w, format!("{path}/{i}"))),
        (a, b) if a == b => None,
        _ => Some(if path.is_empty() {
            "/".to_string()
        } else {
            path
        }),
    }
}
