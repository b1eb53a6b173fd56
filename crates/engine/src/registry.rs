//! Run type → handler.

use crate::Handler;
use opsledger_core::RunType;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<RunType, Arc<dyn Handler>>,
}

impl HandlerRegistry {
    pub fn new() -> HandlerRegistry {
        HandlerRegistry::default()
    }

    pub fn register(&mut self, t: RunType, handler: Arc<dyn Handler>) -> &mut Self {
        self.handlers.insert(t, handler);
        self
    }

    pub fn get(&self, t: RunType) -> Option<Arc<dyn Handler>> {
        self.handlers.get(&t).cloned()
    }

    /// Whether runs of `t` can be executed (the API refuses to start others).
    pub fn supports(&self, t: RunType) -> bool {
        self.handlers.contains_key(&t)
    }
}
