//! Knative condition types and the "living condition set" rule: `Ready` summarises the
//! dependent conditions (the first `False` one wins, else the first `Unknown` one, else
//! `True`). Conditions are kept sorted by type, as knative/pkg does. Transition times are left
//! to the caller (these functions are pure).

use crate::ingress::Condition;

/// Top-level condition of every object.
pub const READY: &str = "Ready";
/// Route: every traffic target resolved to a ready Revision.
pub const ALL_TRAFFIC_ASSIGNED: &str = "AllTrafficAssigned";
/// Route: its KIngress is Ready.
pub const INGRESS_READY: &str = "IngressReady";
/// Route: TLS certificates (Sluice does not provision any: always `True`, `TLSNotEnabled`).
pub const CERTIFICATE_PROVISIONED: &str = "CertificateProvisioned";
/// Service: its Configuration is Ready.
pub const CONFIGURATIONS_READY: &str = "ConfigurationsReady";
/// Service: its Route is Ready.
pub const ROUTES_READY: &str = "RoutesReady";

/// `True`.
pub const TRUE: &str = "True";
/// `False`.
pub const FALSE: &str = "False";
/// `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// A condition without a transition time.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        ..Condition::default()
    }
}

/// A `True` condition without reason.
pub fn happy(type_: &str) -> Condition {
    condition(type_, TRUE, "", "")
}

/// `Ready` from dependents given in the condition set's order.
pub fn summarise(dependents: &[Condition]) -> Condition {
    let first = |status: &str| dependents.iter().find(|c| c.status == status);
    match first(FALSE).or_else(|| first(UNKNOWN)) {
        Some(c) => condition(READY, &c.status, &c.reason, &c.message),
        None => happy(READY),
    }
}

/// The dependents plus their `Ready`, sorted by type.
pub fn with_ready(mut dependents: Vec<Condition>) -> Vec<Condition> {
    let ready = summarise(&dependents);
    dependents.push(ready);
    dependents.sort_by(|a, b| a.type_.cmp(&b.type_));
    dependents
}

/// The same condition under another type (status propagation, e.g. a Route's `Ready` becoming
/// a Service's `RoutesReady`). An absent source is `Unknown`.
pub fn propagate(source: Option<&Condition>, type_: &str) -> Condition {
    match source {
        Some(c) if c.status == TRUE => happy(type_),
        Some(c) => condition(type_, &c.status, &c.reason, &c.message),
        None => condition(type_, UNKNOWN, "", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_summary() {
        let all = with_ready(vec![
            condition("B", UNKNOWN, "Wait", "w"),
            condition("A", FALSE, "Bad", "b"),
        ]);
        assert_eq!(
            all.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["A", "B", READY]
        );
        assert_eq!(all[2], condition(READY, FALSE, "Bad", "b"));
        assert_eq!(summarise(&[happy("A")]), happy(READY));
    }
}
