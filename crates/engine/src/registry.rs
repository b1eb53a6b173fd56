//! Run type → handler, unit handler and reconciliation adapter.

use crate::reconciler::ReconciliationAdapter;
use crate::{Handler, UnitHandler};
use opsledger_core::RunType;
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
