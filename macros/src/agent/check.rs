//! Rules relating the `#[agent(...)]` arguments to the function's parameters: one stream per
//! topic, a name for each table, a topic for the sink, and no argument naming a parameter that is
//! not there. (serde_derive's `check`: rules about one argument or one parameter alone are
//! checked where it is parsed.) Every broken rule is reported, in the order `check_agent` checks
//! them, which is the order the errors appear in.

use crate::ctxt::Ctxt;

use super::args::{AgentArgs, TableArg};
use super::params::{AgentFn, Param};

/// Checks every rule, collecting the errors in `cx`.
pub(super) fn check_agent(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    check_stream_count(cx, args, agent_fn);
    check_topic_bindings(cx, args, agent_fn);
    if agent_fn.sink_count() > 1 {
        cx.error(
            &agent_fn.item.sig.inputs,
            "an agent takes at most one `Sink<U>`",
        );
    }
    check_table_params(cx, args, agent_fn);
    check_table_bindings(cx, args, agent_fn);
    check_table_joins(cx, args);
    if args.topic.is_none() && args.topics.is_empty() {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "missing `topic`: `#[agent(topic = \"pageviews\")]`",
        );
    }
    check_sink_topic(cx, args, agent_fn);
}

/// At least one stream, and several only with `topics(...)`.
fn check_stream_count(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    let streams = agent_fn.stream_count();
    if streams == 0 {
        cx.error(
            agent_fn.name(),
            "an agent takes a `Stream<T>` parameter, e.g. `views: Stream<PageView>`",
        );
    } else if streams > 1 && args.topics.is_empty() {
        cx.error(
            &agent_fn.item.sig.inputs,
            "an agent takes one `Stream<T>` per topic; for several, name them: `topics(views = \"pageviews\", clicks = \"clicks\")`",
        );
    }
}

/// With `topics(...)`: no `topic` as well, and streams and topics matched one to one by name.
fn check_topic_bindings(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    if args.topics.is_empty() {
        return;
    }
    if let Some(topic) = &args.topic {
        cx.error_at(topic.span(), "give either `topic` or `topics`, not both");
    }
    for param in &agent_fn.params {
        match param {
            Param::Stream(Some(ident), _) if !args.topics.iter().any(|(b, _)| b == ident) => {
                cx.error(
                    ident,
                    format!("the stream parameter `{ident}` needs its topic: `topics({ident} = \"...\")`"),
                );
            }
            Param::Stream(None, ty) => cx.error(
                ty,
                "with `topics(...)`, stream parameters need plain names, matched to the topics",
            ),
            _ => {}
        }
    }
    for (binding, _) in &args.topics {
        if agent_fn.stream_named(binding).is_none() {
            cx.error(
                binding,
                format!("`topics({binding} = ...)` has no `{binding}: Stream<T>` parameter"),
            );
        }
    }
}

/// Every table parameter is named in `tables(...)` or `global_tables(...)`.
fn check_table_params(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    for param in &agent_fn.params {
        if let Param::Table(ident, _) = param
            && !args.tables.iter().any(|(b, _)| b == ident)
        {
            cx.error(
                ident,
                format!(
                    "the table parameter `{ident}` needs a table name: `tables({ident} = \"...\")`"
                ),
            );
        }
    }
    for param in &agent_fn.params {
        if let Param::GlobalTable(ident, _) = param
            && !args.global_tables.iter().any(|(b, _)| b == ident)
        {
            cx.error(ident, format!("the global table parameter `{ident}` needs its topic: `global_tables({ident} = \"...\")`"));
        }
    }
}

/// Every name in `global_tables(...)` and `tables(...)` is a parameter of that kind.
fn check_table_bindings(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    for (binding, _) in &args.global_tables {
        if !agent_fn.has_global_table(binding) {
            cx.error(binding, format!("`global_tables({binding} = ...)` has no `{binding}: GlobalTable<K, V>` parameter"));
        }
    }
    for (binding, _) in &args.tables {
        if !agent_fn.has_table(binding) {
            cx.error(
                binding,
                format!("`tables({binding} = ...)` has no `{binding}: Table<K, V>` parameter"),
            );
        }
    }
}

/// `sink` is set exactly when there is a `Sink<U>` parameter.
fn check_sink_topic(cx: &mut Ctxt, args: &AgentArgs, agent_fn: &AgentFn<'_>) {
    match (&args.sink, agent_fn.sink_count()) {
        (Some(_), 0) => cx.error(
            agent_fn.name(),
            "`sink` is set but the function has no `Sink<U>` parameter to write to it",
        ),
        (None, 1) => cx.error(
            agent_fn.name(),
            "the `Sink<U>` parameter needs a `sink` topic: `#[agent(topic = ..., sink = \"out\")]`",
        ),
        _ => {}
    }
}

/// Each side of a `table_join(..)` is a table built from a topic of the same `tables(...)`.
fn check_table_joins(cx: &mut Ctxt, args: &AgentArgs) {
    let built_from = |topic: &syn::LitStr| {
        args.tables
            .iter()
            .any(|(_, t)| matches!(t, TableArg::Of(of) if of.value() == topic.value()))
    };
    for (_, table) in &args.tables {
        if let TableArg::Join { left, right, .. } = table {
            for side in [left, right] {
                if !built_from(side) {
                    cx.error(
                        side,
                        format!(
                            "a table join's sides are tables built from topics: add `{0} = table_of(\"{0}\")` to `tables(...)`",
                            side.value()
                        ),
                    );
                }
            }
        }
    }
}
