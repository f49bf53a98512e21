//! What the Route reconciler reads: Configurations and Revisions with their status (as
//! upstream's listers). [`ServingObjects`] is the in-memory implementation, filled from
//! Configuration outcomes.

use std::collections::BTreeMap;

use super::configuration::ConfigurationOutcome;
use super::types::{Configuration, Key, Revision};

/// Read access to reconciled Configurations and Revisions.
pub trait Catalog {
    /// A Configuration (with status) by namespace and name.
    fn configuration(&self, namespace: &str, name: &str) -> Option<&Configuration>;
    /// A Revision (with status) by namespace and name.
    fn revision(&self, namespace: &str, name: &str) -> Option<&Revision>;
}

/// Configurations and Revisions keyed by namespace and name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServingObjects {
    /// Configurations.
    pub configurations: BTreeMap<Key, Configuration>,
    /// Revisions.
    pub revisions: BTreeMap<Key, Revision>,
}

impl ServingObjects {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a Configuration.
    pub fn add_configuration(&mut self, c: Configuration) -> &mut Self {
        self.configurations.insert(c.key(), c);
        self
    }

    /// Adds or replaces a Revision.
    pub fn add_revision(&mut self, r: Revision) -> &mut Self {
        self.revisions.insert(r.key(), r);
        self
    }

    /// Adds a reconciled Configuration and all its Revisions.
    pub fn add_outcome(&mut self, o: &ConfigurationOutcome) -> &mut Self {
        self.add_configuration(o.configuration.clone());
        for r in &o.revisions {
            self.add_revision(r.clone());
        }
        self
    }
}

impl Catalog for ServingObjects {
    fn configuration(&self, namespace: &str, name: &str) -> Option<&Configuration> {
        self.configurations.get(&Key::new(namespace, name))
    }

    fn revision(&self, namespace: &str, name: &str) -> Option<&Revision> {
        self.revisions.get(&Key::new(namespace, name))
    }
}
