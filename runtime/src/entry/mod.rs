//! Entry points: the `App` builder, the test harness and the command line.

pub mod app;
pub(crate) mod cli;
pub(crate) mod reset;
pub mod testing;
