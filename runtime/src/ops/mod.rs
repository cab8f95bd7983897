//! Operators and the user API: streams, sinks and topics, windows and joins over one operator
//! runner.

pub(crate) mod expiry;
pub mod join;
pub(crate) mod operator;
pub(crate) mod punctuate;
pub(crate) mod request;
pub mod stream;
pub mod topic;
pub mod window;
