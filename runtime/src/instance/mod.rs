//! The agent instance: its effects buffer and its tables (the record loop and commit step join them here). It names only the layers below.

pub(crate) mod context;
pub(crate) mod position;
pub(crate) mod record_loop;
pub mod table;
