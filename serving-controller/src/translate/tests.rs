//! Tests of [`translate_ingress`]: table-driven cases that build the expected Envoy protos
//! with the same per-resource constructors and compare whole values ([`cases`]), the errors
//! ([`errors`]), and the fixtures both use ([`fixtures`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::*;

mod cases;
mod errors;
pub(crate) mod fixtures;

use cases::cases;
use fixtures::{CERT, KEY, meta};
pub(crate) use fixtures::{kingress, objects};

#[test]
fn stringdata_secrets_work_for_files() {
    let mut objects = objects();
    objects.add_secret(Secret {
        metadata: meta("default", "from-file"),
        string_data: Some(BTreeMap::from([
            ("tls.crt".to_string(), CERT.to_string()),
            ("tls.key".to_string(), KEY.to_string()),
        ])),
        ..Default::default()
    });
    let ing = kingress(
        "tls:\n- {hosts: [e.example.com], secretName: from-file, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
    );
    let got = translate_ingress(&ing, &objects).unwrap();
    assert_eq!(
        got.secrets,
        vec![tls::sds_secret(
            "default/from-file",
            CERT.as_bytes(),
            KEY.as_bytes()
        )]
    );
}

#[test]
fn the_hash_changes_with_the_spec_and_reaches_every_probe() {
    let objects = objects();
    let a = kingress(&cases()[3].spec);
    let mut b = a.clone();
    b.spec.rules[0].hosts.push("more.example.com".into());
    let ta = translate_ingress(&a, &objects).unwrap();
    let tb = translate_ingress(&b, &objects).unwrap();
    assert_ne!(ta.hash, tb.hash);
    for rc in &tb.route_configurations {
        for vh in &rc.virtual_hosts {
            let probes: Vec<_> = vh
                .routes
                .iter()
                .filter(|r| r.name.ends_with(".Probe"))
                .collect();
            assert_eq!(probes.len(), 3);
            for p in probes {
                assert_eq!(
                    p.response_headers_to_add,
                    vec![routes::set_header("K-Network-Hash", &tb.hash)]
                );
            }
        }
    }
}
