//! The app's own web pages (Faust's `@app.page`): `#[page("/count/{url}")]` on an async axum
//! handler, or a [`PageSpec`] by hand. A page is built once the worker's tables exist (its
//! `TableReader` parameters are opened then, so a misspelt table stops the start) and served
//! by the worker's web server beside `App::routes`, behind the same bearer token.

use std::sync::Arc;

use crate::base::error::{Error, Result};
use crate::wiring::reader::Tables;

/// Builds a page's router, given the worker's tables.
pub type PageFn = Arc<dyn Fn(&Tables) -> Result<axum::Router> + Send + Sync>;

/// One page: a name (for errors), its path, and how to build its router.
#[derive(Clone)]
pub struct PageSpec {
    name: String,
    path: String,
    build: PageFn,
}

impl PageSpec {
    /// A page `name` serving `path` with the router `build` returns.
    pub fn new(
        name: &str,
        path: &str,
        build: impl Fn(&Tables) -> Result<axum::Router> + Send + Sync + 'static,
    ) -> Self {
        PageSpec {
            name: name.to_owned(),
            path: path.to_owned(),
            build: Arc::new(build),
        }
    }

    /// The page's name (its function's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path it serves (axum's syntax: `/count/{url}`).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Debug for PageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageSpec")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A `#[page]`'s entry in the binary's registry (submitted with `inventory`).
pub struct PageRegistration {
    /// Builds the page's description.
    pub build: fn() -> PageSpec,
}

inventory::collect!(PageRegistration);

/// Every page registered in this binary, sorted by path.
pub fn registered_pages() -> Vec<PageSpec> {
    let mut pages: Vec<PageSpec> = inventory::iter::<PageRegistration>
        .into_iter()
        .map(|r| (r.build)())
        .collect();
    pages.sort_by(|a, b| a.path.cmp(&b.path));
    pages
}

/// The pages' routers merged into `base`; two pages on one path (axum panics on overlapping
/// routes) are an error naming both.
pub(crate) fn merge(
    mut base: axum::Router,
    pages: &[PageSpec],
    tables: &Tables,
) -> Result<axum::Router> {
    for (i, page) in pages.iter().enumerate() {
        let router = (page.build)(tables).map_err(|e| {
            Error::config(
                format!("page `{}` ({})", page.name, page.path),
                e.to_string(),
            )
        })?;
        let merged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| base.merge(router)));
        base = merged.map_err(|_| {
            let other = pages[..i].iter().find(|p| p.path == page.path).map_or_else(
                || "a route of App::routes".to_owned(),
                |p| format!("page `{}`", p.name),
            );
            Error::config(
                format!("page `{}` ({})", page.name, page.path),
                format!("its path is served by {other} already; give each page its own path"),
            )
        })?;
    }
    Ok(base)
}
