//! Run type → handler, unit handler and reconciliation adapter.

use crate::reconciler::ReconciliationAdapter;
use crate::{Handler, UnitHandler};
use opsledger_core::RunType;
use opsledger_core::catalog::Reconciliation;

/// What executes one run type: the part of a family's descriptor that the
/// engine runs (the rest — scope, capability, dedup key, parameters,
/// progress mode, attempts, timeouts — is its catalog entry,
/// [`opsledger_core::catalog::TypeSpec`]).
pub struct Family {
    /// The run's own job: plans, records, completes.
    pub run: Arc<dyn Handler>,
    /// One job per unit, for a fan-out type; `None` for any other.
    pub units: Option<Arc<dyn UnitHandler>>,
    /// Reads a stale run's proof; `None` when the catalog says a stale run
    /// of this type fails closed or is derived from its children.
    pub adapter: Option<Arc<dyn ReconciliationAdapter>>,
}
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<RunType, Arc<dyn Handler>>,
    unit_handlers: BTreeMap<RunType, Arc<dyn UnitHandler>>,
    adapters: BTreeMap<RunType, Arc<dyn ReconciliationAdapter>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers the family executing `t`. Panics when the family and the
    /// catalog entry disagree (a fan-out type without unit handler, an
    /// adapter the catalog does not announce or the reverse): a build that
    /// would lie about a type does not start.
    pub fn register(&mut self, t: RunType, family: Family) -> &mut Self {
        assert_eq!(
            t.is_fan_out(),
            family.units.is_some(),
            "{t}: the catalog's fan_out and the family's unit handler disagree"
        );
        assert_eq!(
            t.reconciliation() == Reconciliation::Adapter,
            family.adapter.is_some(),
            "{t}: the catalog's reconciliation and the family's adapter disagree"
        );
        self.handler(t, family.run);
        if let Some(units) = family.units {
            self.unit_handler(t, units);
        }
        if let Some(adapter) = family.adapter {
            self.adapter(t, adapter);
        }
        self
    }

    pub fn handler(&mut self, t: RunType, h: Arc<dyn Handler>) -> &mut Self {
        self.handlers.insert(t, h);
        self
    }

    pub fn unit_handler(&mut self, t: RunType, h: Arc<dyn UnitHandler>) -> &mut Self {
        assert!(t.is_fan_out(), "{t} is not a fan-out type");
        self.unit_handlers.insert(t, h);
        self
    }

    pub fn adapter(&mut self, t: RunType, a: Arc<dyn ReconciliationAdapter>) -> &mut Self {
        self.adapters.insert(t, a);
        self
    }

    pub fn get(&self, t: RunType) -> Option<Arc<dyn Handler>> {
        self.handlers.get(&t).cloned()
    }

    pub fn get_unit(&self, t: RunType) -> Option<Arc<dyn UnitHandler>> {
        self.unit_handlers.get(&t).cloned()
    }

    pub fn get_adapter(&self, t: RunType) -> Option<Arc<dyn ReconciliationAdapter>> {
        self.adapters.get(&t).cloned()
    }

    /// Whether runs of `t` can be executed (the API refuses to start others).
    pub fn supports(&self, t: RunType) -> bool {
        self.handlers.contains_key(&t) && (!t.is_fan_out() || self.unit_handlers.contains_key(&t))
    }
}
