//! The Grafana dashboard (`deploy/grafana/sluice-dashboard.json`) imports cleanly and charts only
//! metrics Sluice really exports: every panel has a unique id and a `gridPos`, and every
//! `sluice_*` metric a query uses is listed in README.md's `### Metrics` table and registered in
//! the sources.
//!
//! How names are made (prometheus-client): the debug server's registry has the prefix `sluice`
//! (`Registry::with_prefix("sluice")`, `src/debug.rs`); a component either registers under a
//! sub-registry (`sub_registry_with_prefix("xds")` + `register("pushes", …)` →
//! `sluice_xds_pushes`) or writes the rest of the name itself (the controller's collector:
//! `"controller_synced"` → `sluice_controller_synced`). The encoder then appends `_total` to
//! counters and `_bucket` / `_sum` / `_count` to histograms. The source check undoes exactly
//! that.
//!
//! Metric names are read from each `expr` as PromQL identifiers outside quoted strings (label
//! values such as `envoy_cluster_name!="sluice_xds"` are not metric names).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/sluice-dashboard.json";
const README: &str = "README.md";
const METRICS_HEADING: &str = "### Metrics";
/// Where metrics are registered.
const SOURCE_DIRS: &[&str] = &[
    "src",
    "xds-server/src",
    "activator/src",
    "autoscaler/src",
    "serving-controller/src",
];
/// The debug registry's prefix, with the separator prometheus-client puts after it.
const PREFIX: &str = "sluice_";
/// What prometheus-client appends to a histogram's registered name.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];
/// What prometheus-client appends to a counter's registered name.
const COUNTER_SUFFIX: &str = "_total";
/// Grafana's grid is 24 columns wide.
const GRID_COLUMNS: u64 = 24;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD}: not valid JSON: {e}"))
}

/// Every panel with its JSON path, rows' nested panels included (a collapsed row keeps its
/// panels in its own `panels`).
fn panels(dashboard: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(list: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
        let Some(items) = list.as_array() else {
            return;
        };
        for (i, panel) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            out.push((here.clone(), panel));
            if let Some(nested) = panel.get("panels") {
                walk(nested, &format!("{here}.panels"), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "panels", &mut out);
    out
}

fn describe(path: &str, panel: &Value) -> String {
    match panel.get("title").and_then(Value::as_str) {
        Some(title) => format!("{path} ({title:?})"),
        None => path.to_string(),
    }
}

/// Every string under an `expr` key anywhere in the document, with its JSON path.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let here = format!("{path}.{key}");
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => out.push((here, expr.clone())),
                        _ => walk(v, &here, out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "$", &mut out);
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The identifiers of `expr` that start with `sluice_`, skipping quoted strings.
fn sluice_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if b == b'"' || b == b'\'' || b == b'`' {
            quote = Some(b);
            i += 1;
            continue;
        }
        if is_ident(b) {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            // Both ends sit on ASCII bytes: valid char boundaries.
            let word = &expr[start..i];
            if word.starts_with(PREFIX) {
                out.push(word.to_string());
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Whether `needle` occurs in `haystack` as a whole identifier.
fn contains_word(haystack: &str, needle: &str) -> bool {
    let bytes = haystack.as_bytes();
    haystack.match_indices(needle).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + needle.len()).copied();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The name as exported, and without a histogram suffix when it has one.
fn exported_forms(name: &str) -> Vec<String> {
    let mut forms = vec![name.to_string()];
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix) {
            forms.push(base.to_string());
        }
    }
    forms
}

/// What the code may have registered for exported `name`: the name without `sluice_`, and
/// without the suffix the encoder appends (`_total` for a counter, `_bucket` / `_sum` /
/// `_count` for a histogram).
fn registered_forms(name: &str) -> Vec<String> {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return Vec::new();
    };
    let mut forms = vec![rest.to_string()];
    if let Some(base) = rest.strip_suffix(COUNTER_SUFFIX) {
        forms.push(base.to_string());
    }
    for suffix in HISTOGRAM_SUFFIXES {
        if let Some(base) = rest.strip_suffix(suffix) {
            forms.push(base.to_string());
        }
    }
    forms
}

/// The table rows of README.md's `### Metrics` section (up to the next heading of level 1 to 3).
fn readme_metrics_table() -> Result<String, String> {
    let text = read(README);
    let mut lines = text.lines().skip_while(|l| l.trim_end() != METRICS_HEADING);
    if lines.next().is_none() {
        return Err(format!(
            "{README} has no `{METRICS_HEADING}` section: every metric the dashboard uses is \
             expected in its table"
        ));
    }
    let is_section_end = |l: &str| {
        let hashes = l.bytes().take_while(|b| *b == b'#').count();
        (1..=3).contains(&hashes) && l[hashes..].starts_with(' ')
    };
    let rows: Vec<&str> = lines
        .take_while(|l| !is_section_end(l))
        .filter(|l| l.trim_start().starts_with('|'))
        .collect();
    if rows.is_empty() {
        return Err(format!(
            "{README}: the `{METRICS_HEADING}` section has no table (`| Metric | Type | Labels | \
             Meaning |`)"
        ));
    }
    Ok(rows.join("\n"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under [`SOURCE_DIRS`], by path relative to the repository.
fn sources() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    for dir in SOURCE_DIRS {
        rust_files(&root().join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let relative = path
                .strip_prefix(root())
                .unwrap_or(&path)
                .display()
                .to_string();
            (relative, text)
        })
        .collect()
}

/// Where `base` (a name without `sluice_`) is registered: a file holding the literal `"base"`
/// (a name written whole, as the controller's collector does), or one holding both
/// `sub_registry_with_prefix("p")` and `"rest"` where `base` is `p_rest`.
fn registration(sources: &BTreeMap<String, String>, base: &str) -> Option<String> {
    let whole = format!("\"{base}\"");
    if let Some((file, _)) = sources.iter().find(|(_, text)| text.contains(&whole)) {
        return Some(format!("{file} (\"{base}\")"));
    }
    for (at, _) in base.match_indices('_') {
        let (prefix, rest) = (&base[..at], &base[at + 1..]);
        let sub = format!("sub_registry_with_prefix(\"{prefix}\")");
        let name = format!("\"{rest}\"");
        if let Some((file, _)) = sources
            .iter()
            .find(|(_, text)| text.contains(&sub) && text.contains(&name))
        {
            return Some(format!("{file} ({sub}, \"{rest}\")"));
        }
    }
    None
}

#[test]
fn the_dashboard_is_importable() {
    let d = dashboard();
    assert_eq!(d["uid"].as_str(), Some("sluice"), "{DASHBOARD}: uid");
    assert_eq!(d["title"].as_str(), Some("Sluice"), "{DASHBOARD}: title");
    assert_eq!(
        d["schemaVersion"].as_u64(),
        Some(39),
        "{DASHBOARD}: schemaVersion"
    );
    let variables = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        variables
            .iter()
            .any(|v| v["name"].as_str() == Some("datasource")
                && v["type"].as_str() == Some("datasource")
                && v["query"].as_str() == Some("prometheus")),
        "{DASHBOARD}: no Prometheus `datasource` templating variable in templating.list"
    );

    let all = panels(&d);
    assert!(!all.is_empty(), "{DASHBOARD}: no panels");
    let mut problems = Vec::new();
    let mut ids: BTreeMap<u64, String> = BTreeMap::new();
    for (path, panel) in &all {
        let what = describe(path, panel);
        match panel.get("id").and_then(Value::as_u64) {
            None => problems.push(format!("{what}: no numeric `id`")),
            Some(id) => {
                if let Some(first) = ids.insert(id, what.clone()) {
                    problems.push(format!("{what}: id {id} is also the id of {first}"));
                }
            }
        }
        let Some(grid) = panel.get("gridPos").and_then(Value::as_object) else {
            problems.push(format!("{what}: no `gridPos`"));
            continue;
        };
        let field = |k: &str| grid.get(k).and_then(Value::as_u64);
        match (field("h"), field("w"), field("x"), field("y")) {
            (Some(h), Some(w), Some(x), Some(_)) => {
                if h == 0 || w == 0 || x + w > GRID_COLUMNS {
                    problems.push(format!(
                        "{what}: gridPos h={h} w={w} x={x} does not fit a {GRID_COLUMNS}-column grid"
                    ));
                }
            }
            _ => problems.push(format!(
                "{what}: gridPos needs numeric h, w, x and y, has {}",
                Value::Object(grid.clone())
            )),
        }
        if panel["type"].as_str() != Some("row")
            && panel["datasource"]["uid"].as_str() != Some("${datasource}")
        {
            problems.push(format!(
                "{what}: datasource is not the `${{datasource}}` variable"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_sluice_metric_charted_is_documented_and_registered() {
    let d = dashboard();
    // metric → the queries using it
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, expr) in exprs(&d) {
        for name in sluice_names(&expr) {
            used.entry(name).or_default().insert(path.clone());
        }
    }
    assert!(
        !used.is_empty(),
        "{DASHBOARD}: no query uses a `{PREFIX}*` metric (or the name reader is broken)"
    );

    let sources = sources();
    assert!(
        sources
            .values()
            .any(|text| text.contains("Registry::with_prefix(\"sluice\")")),
        "no `Registry::with_prefix(\"sluice\")` under {SOURCE_DIRS:?}: the `{PREFIX}` prefix \
         the names below assume is not where this test expects it"
    );
    let table = readme_metrics_table();

    let mut problems = Vec::new();
    for (name, paths) in &used {
        let at = paths.iter().cloned().collect::<Vec<_>>().join(", ");
        match &table {
            Err(e) => problems.push(format!("{name} (used by {at}): {e}")),
            Ok(table) => {
                let forms = exported_forms(name);
                if !forms.iter().any(|f| contains_word(table, f)) {
                    problems.push(format!(
                        "{name} (used by {at}): not in the table of {README}'s \
                         `{METRICS_HEADING}` section (looked for {})",
                        forms.join(" or ")
                    ));
                }
            }
        }
        let forms = registered_forms(name);
        if !forms.iter().any(|f| registration(&sources, f).is_some()) {
            problems.push(format!(
                "{name} (used by {at}): not registered in the Rust sources under \
                 {SOURCE_DIRS:?}: looked for the literal name (without `{PREFIX}` and without \
                 a `{COUNTER_SUFFIX}` / `_bucket` / `_sum` / `_count` suffix) {}, whole or \
                 after a `sub_registry_with_prefix` in the same file",
                forms
                    .iter()
                    .map(|f| format!("\"{f}\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_name_reader_skips_label_values_and_keeps_metrics() {
    let expr = r#"sum by (type) (rate(sluice_xds_pushes_total{mode="sluice_not_a_metric"}[5m])) / sluice_xds_streams"#;
    assert_eq!(
        sluice_names(expr),
        vec!["sluice_xds_pushes_total", "sluice_xds_streams"]
    );
    assert!(contains_word(
        "| `sluice_xds_pushes_total` |",
        "sluice_xds_pushes_total"
    ));
    assert!(!contains_word(
        "| `sluice_xds_push_bytes_total` |",
        "sluice_xds_push"
    ));
    assert_eq!(
        registered_forms("sluice_xds_push_to_ack_seconds_bucket"),
        vec!["xds_push_to_ack_seconds_bucket", "xds_push_to_ack_seconds"]
    );
    let sources = BTreeMap::from([(
        "metrics.rs".to_string(),
        r#"let r = registry.sub_registry_with_prefix("xds"); r.register("pushes", "", c);"#
            .to_string(),
    )]);
    assert!(registration(&sources, "xds_pushes").is_some());
    assert!(registration(&sources, "xds_pulls").is_none());
}
