//! Procedural macros of rill: `#[record]`, `#[agent]`, `#[window_state]`, `#[timer]`,
//! `#[crontab]` and `#[page]`.
//!
//! All are thin: they generate implementations of public runtime items (`rill::Record`,
//! `rill::AgentSpec`) that could be written by hand, and report mistakes as compile errors with
//! spans on the culprit. Generated code names runtime items through `::rill::...`.
#![forbid(unsafe_code)]

extern crate proc_macro;

mod agent;
mod attr;
mod avro;
mod ctxt;
mod page;
mod record;
mod registration;
mod timer;
mod window_state;

use proc_macro::TokenStream;

/// Makes a struct a rill record: serde derives, a `rill::Record` impl (codec, optional key
/// field, optional event-time field) and typed field accessors (`PageView::url`).
///
/// Codecs: `json` (the default), `postcard`, and the schema-registry codecs `avro` and
/// `json_schema`, whose schema is derived from the struct (each field's type through
/// `rill::AvroSchema`, so a type without an Avro form is an error at the field) or read from
/// `schema = "path"` (relative to the crate's `Cargo.toml`).
///
/// ```ignore
/// #[record]                       // or #[record(codec = "postcard")], #[record(codec = "avro")]
/// pub struct PageView {
///     #[record(key)]              // the Kafka message key
///     pub user_id: String,
///     pub url: String,
///     #[record(timestamp)]        // event time: f64 seconds, i64/u64 milliseconds, SystemTime
///     pub view_time: f64,
/// }
/// ```
#[proc_macro_attribute]
pub fn record(args: TokenStream, input: TokenStream) -> TokenStream {
    record::expand_record(args.into(), input.into()).into()
}

/// Turns an `async fn` taking a `Stream<T>` (and optionally a `Sink<U>`) into an agent,
/// registered with the app automatically.
///
/// Arguments: `topic` (a string, or a `Topic<K, T>` constant), `concurrency` (instances, each
/// owning a share of the partitions), `sink` (a string or `Topic` constant the `Sink` parameter
/// writes to), `group` (consumer group, default `<app>-<agent>`).
///
/// ```ignore
/// #[agent(topic = "pageviews", concurrency = 4)]
/// async fn log_views(mut views: Stream<PageView>) -> rill::Result<()> {
///     while let Some(view) = views.next().await { /* ... */ }
///     Ok(())
/// }
/// ```
///
/// The function stays callable as written; `log_views::agent()` returns its `rill::AgentSpec`
/// (e.g. to run a chosen subset with `App::agents`).
#[proc_macro_attribute]
pub fn agent(args: TokenStream, input: TokenStream) -> TokenStream {
    agent::expand_agent(args.into(), input.into()).into()
}

/// Makes a struct a window's accumulator: derives its serde plumbing (window state is stored
/// in the table store and its changelog) and checks that it is `Default` (the empty window) and
/// `Clone`. Implement `rill::WindowState<T>` (`add`) for it, and `rill::MergeState` (`merge`)
/// to use it in session windows; then `windows.aggregate::<Visits>()`.
///
/// ```ignore
/// #[window_state]
/// #[derive(Default, Clone, Debug)]
/// pub struct Visits {
///     pub views: u64,
///     pub users: BTreeSet<String>,
/// }
///
/// impl WindowState<PageView> for Visits {
///     fn add(&mut self, view: &PageView) {
///         self.views += 1;
///         self.users.insert(view.user_id.clone());
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn window_state(args: TokenStream, input: TokenStream) -> TokenStream {
    window_state::expand_window_state(args.into(), input.into()).into()
}

/// Runs an `async fn` every interval, on every worker or (`on_leader = true`) on the one
/// worker of the app that leads; registered with the app automatically.
///
/// Arguments: `every` (`"500ms"`, `"10s"`, `"5m"`, `"2h"`, `"1d"`, or a number of seconds),
/// `on_leader`, `on_error` (`"skip"`, the default: log and wait for the next time; `"retry"`
/// with `retries` and `retry_backoff_ms`; `"stop"`), `tables(binding = "table")`. Parameters:
/// a `Producer`, a `TimerContext`, `TableReader<K, V>`s (of the table named like the parameter,
/// or bound in `tables`).
///
/// ```ignore
/// #[timer(every = "10s", on_leader = true)]
/// async fn publish_totals(url_totals: TableReader<String, u64>, producer: Producer) -> rill::Result<()> {
///     let total: u64 = url_totals.entries()?.map(|e| e.map(|(_, n)| n)).sum::<rill::Result<u64>>()?;
///     producer.send_to("totals", &total).await
/// }
/// ```
///
/// `publish_totals::timer()` returns its `rill::TimerSpec` (for `App::timers`).
#[proc_macro_attribute]
pub fn timer(args: TokenStream, input: TokenStream) -> TokenStream {
    timer::expand_timer(timer::Kind::Timer, args.into(), input.into()).into()
}

/// Runs an `async fn` when a cron expression matches, in a time zone (Faust's `@app.crontab`);
/// otherwise like [`macro@timer`].
///
/// ```ignore
/// #[crontab("0 20 * * *", timezone = "Europe/Paris", on_leader = true)]
/// async fn nightly_report(producer: Producer) -> rill::Result<()> { /* ... */ Ok(()) }
/// ```
///
/// Five fields (`minute hour day-of-month month day-of-week`) or six with seconds first; the
/// time zone defaults to UTC. Both are checked at compile time.
#[proc_macro_attribute]
pub fn crontab(args: TokenStream, input: TokenStream) -> TokenStream {
    timer::expand_timer(timer::Kind::Crontab, args.into(), input.into()).into()
}

/// Serves an async axum handler at a path of the worker's web server (Faust's `@app.page`),
/// behind the worker's bearer token; registered with the app automatically.
///
/// ```ignore
/// #[page("/count/{url}")]                        // method = "post" | "put" | "patch" | "delete"
/// async fn count(Path(url): Path<String>, url_view_totals: TableReader<String, u64>) -> Json<u64> {
///     Json(url_view_totals.get(&url).ok().flatten().unwrap_or(0))
/// }
/// ```
///
/// A `TableReader<K, V>` parameter reads the table of its name (or `tables(binding =
/// "table")`), opened when the worker starts; every other parameter is an axum extractor.
#[proc_macro_attribute]
pub fn page(args: TokenStream, input: TokenStream) -> TokenStream {
    page::expand_page(args.into(), input.into()).into()
}

/// The Avro record schema of a struct with named fields (`rill::schema_registry::AvroSchema`):
/// named after the struct, in the namespace of its module path; each field's type gives its
/// schema (`Option` fields default to null), serde's `rename` and `skip` are followed.
///
/// ```ignore
/// #[record]
/// #[derive(AvroSchema)]
/// struct PageView { url: String, user: Option<String>, at_ms: i64 }
/// let schema = PageView::avro_schema_json();   // for the registry, or `cargo run -- schema`
/// ```
#[proc_macro_derive(AvroSchema)]
pub fn avro_schema(input: TokenStream) -> TokenStream {
    avro::expand_avro_schema(input.into()).into()
}
