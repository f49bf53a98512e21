//! Every translation error names the KIngress and the field.

use super::fixtures::*;
use crate::ingress::FieldError;
use crate::translate::*;

fn split_spec(split: &str) -> String {
    format!(
        "rules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {split}\n"
    )
}

#[test]
fn errors_name_the_object_and_field() {
    let k = key;
    let split0 = "spec.rules[0].http.paths[0].splits[0]";
    let cases: Vec<(&str, Ingress, TranslateError, &str)> = vec![
        (
            "other class",
            {
                let mut i = kingress(&split_spec(
                    "{serviceName: hello-00001, serviceNamespace: default, servicePort: 80}",
                ));
                i.metadata.annotations = None;
                i
            },
            TranslateError::OtherClass {
                ingress: k(),
                class: None,
            },
            "ingress default/hello has ingress class None, not \"sluice.ingress.networking.knative.dev\"",
        ),
        (
            "invalid percent sum",
            kingress(
                "rules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: a, serviceNamespace: default, servicePort: 80, percent: 50}\n      - {serviceName: b, serviceNamespace: default, servicePort: 80, percent: 40}\n",
            ),
            TranslateError::Invalid {
                ingress: k(),
                errors: vec![FieldError {
                    message: "traffic split percentage must total to 100, but was 90".into(),
                    paths: vec!["spec.rules[0].http.paths[0].splits".into()],
                }],
            },
            "ingress default/hello is invalid: traffic split percentage must total to 100, but was 90: spec.rules[0].http.paths[0].splits",
        ),
        (
            "unknown service",
            kingress(&split_spec(
                "{serviceName: nope, serviceNamespace: default, servicePort: 80}",
            )),
            TranslateError::ServiceNotFound {
                ingress: k(),
                field: format!("{split0}.serviceName"),
                namespace: "default".into(),
                name: "nope".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].serviceName: service default/nope not found",
        ),
        (
            "unknown port number",
            kingress(&split_spec(
                "{serviceName: hello-00001, serviceNamespace: default, servicePort: 8080}",
            )),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/hello-00001".into(),
                port: "8080".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/hello-00001 has no port 8080",
        ),
        (
            "unknown port name",
            kingress(&split_spec(
                "{serviceName: hello-00001, serviceNamespace: default, servicePort: grpc}",
            )),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/hello-00001".into(),
                port: "\"grpc\"".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/hello-00001 has no port \"grpc\"",
        ),
        (
            "ExternalName without that port name",
            kingress(&split_spec(
                "{serviceName: ext-noports, serviceNamespace: default, servicePort: http}",
            )),
            TranslateError::PortNotFound {
                ingress: k(),
                field: format!("{split0}.servicePort"),
                service: "default/ext-noports".into(),
                port: "\"http\"".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].servicePort: service default/ext-noports has no port \"http\"",
        ),
        (
            "ExternalName without externalName",
            kingress(&split_spec(
                "{serviceName: ext-broken, serviceNamespace: default, servicePort: 80}",
            )),
            TranslateError::ExternalNameMissing {
                ingress: k(),
                field: format!("{split0}.serviceName"),
                service: "default/ext-broken".into(),
            },
            "ingress default/hello: spec.rules[0].http.paths[0].splits[0].serviceName: service default/ext-broken is of type ExternalName but has no spec.externalName",
        ),
        (
            "missing secret",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: gone, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretNotFound {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                namespace: "default".into(),
                name: "gone".into(),
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/gone not found",
        ),
        (
            "secret without tls.key",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: no-key, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretKeyMissing {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                secret: "default/no-key".into(),
                key: "tls.key",
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/no-key has no \"tls.key\"",
        ),
        (
            "secret that is not PEM",
            kingress(
                "tls:\n- {hosts: [e.example.com], secretName: not-pem, secretNamespace: default}\nrules:\n- hosts: [e.example.com]\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::SecretNotPem {
                ingress: k(),
                field: "spec.tls[0].secretName".into(),
                secret: "default/not-pem".into(),
                key: "tls.crt",
            },
            "ingress default/hello: spec.tls[0].secretName: secret default/not-pem key \"tls.crt\" is not PEM",
        ),
        (
            "wildcard host",
            kingress(
                "rules:\n- hosts: [ok.example.com, '*.example.com']\n  http:\n    paths:\n    - splits:\n      - {serviceName: hello-00001, serviceNamespace: default, servicePort: 80}\n",
            ),
            TranslateError::UnsupportedHost {
                ingress: k(),
                field: "spec.rules[0].hosts[1]".into(),
                host: "*.example.com".into(),
                reason: "wildcard hosts are not supported; Knative hosts are exact",
            },
            "ingress default/hello: spec.rules[0].hosts[1]: host \"*.example.com\" is not supported: wildcard hosts are not supported; Knative hosts are exact",
        ),
    ];
    let objects = objects();
    for (name, ing, want, message) in cases {
        let got = translate_ingress(&ing, &objects).expect_err(name);
        assert_eq!(got, want, "{name}");
        assert_eq!(got.to_string(), message, "{name}");
        assert_eq!(got.ingress(), &key(), "{name}");
    }
}
