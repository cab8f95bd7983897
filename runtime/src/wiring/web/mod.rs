//! The web server (axum): health, readiness, metrics, table queries, topology and a status page.

pub(crate) mod api;
mod graph;
mod server;

pub(crate) use graph::{to_dot, to_svg};
pub(crate) use server::{WebServer, serve};
