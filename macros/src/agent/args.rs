//! The `#[agent(...)]` arguments, parsed into [`AgentArgs`]. Rules about the arguments alone are
//! checked here: known keys, each given once, values of the right kind, retry settings only with
//! a retrying policy. Rules relating them to the function's parameters are in `check`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;

use crate::attr::{
    parse_arg_list, parse_bindings, parse_choice, parse_str, set_once, unknown_argument,
};
use crate::ctxt::Ctxt;

const AGENT_KEYS: &[&str] = &[
    "topic",
    "channel",
    "topics",
    "concurrency",
    "sink",
    "group",
    "tables",
    "global_tables",
    "on_error",
    "dead_letter",
    "retries",
    "retry_backoff_ms",
    "offset_reset",
];

const POLICIES: &[&str] = &["dead_letter", "retry", "retry_topics", "skip", "stop"];

const OFFSET_RESETS: &[&str] = &["earliest", "latest"];

/// A topic given by name (`"pageviews"`) or by a `Topic` constant (`PAGEVIEWS`).
pub(super) enum TopicArg {
    Name(syn::LitStr),
    Const(syn::Path),
}

impl TopicArg {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<Self> {
        let expr: syn::Expr = meta.value()?.parse()?;
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => {
                if s.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(s, "topic names cannot be empty"));
                }
                Ok(TopicArg::Name(s))
            }
            syn::Expr::Path(p) => Ok(TopicArg::Const(p.path)),
            other => Err(syn::Error::new_spanned(
                other,
                "expected a topic name (`\"pageviews\"`) or a `Topic` constant (`PAGEVIEWS`)",
            )),
        }
    }

    pub(super) fn span(&self) -> Span {
        match self {
            TopicArg::Name(lit) => lit.span(),
            TopicArg::Const(path) => path.span(),
        }
    }

    /// The topic's name as an expression: the literal, or `CONSTANT.name()`.
    pub(super) fn name_expr(&self) -> TokenStream {
        match self {
            TopicArg::Name(lit) => quote!(#lit),
            TopicArg::Const(path) => quote!(#path.name()),
        }
    }
}

/// A table of `tables(...)`: one the agent writes (`"name"`), one built from a topic
/// (`table_of("topic")`, named after the topic), or a join of two of those
/// (`table_join("left", "right", "inner" | "left" | "outer")`, named after its binding).
pub(super) enum TableArg {
    Name(syn::LitStr),
    Of(syn::LitStr),
    Join {
        left: syn::LitStr,
        right: syn::LitStr,
        kind: syn::Ident,
    },
}

/// The table join kinds, as spelled in `table_join(..)`, and their `TableJoin` variants.
const JOIN_KINDS: &[(&str, &str)] = &[("inner", "Inner"), ("left", "Left"), ("outer", "Outer")];

impl TableArg {
    fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<Self> {
        let expr: syn::Expr = meta.value()?.parse()?;
        const FORM: &str = "expected a table name (`\"url_totals\"`), `table_of(\"topic\")` or `table_join(\"left\", \"right\", \"inner\")`";
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Ok(TableArg::Name(s)),
            syn::Expr::Call(call) if matches!(&*call.func, syn::Expr::Path(p) if p.path.is_ident("table_join")) => {
                Self::parse_join(&call)
            }
            syn::Expr::Call(call) => {
                let is_table_of =
                    matches!(&*call.func, syn::Expr::Path(p) if p.path.is_ident("table_of"));
                match (is_table_of, call.args.first(), call.args.len()) {
                    (
                        true,
                        Some(syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(topic),
                            ..
                        })),
                        1,
                    ) => Ok(TableArg::Of(topic.clone())),
                    _ => Err(syn::Error::new_spanned(call, FORM)),
                }
            }
            other => Err(syn::Error::new_spanned(other, FORM)),
        }
    }

    /// `table_join("left", "right", "kind")`.
    fn parse_join(call: &syn::ExprCall) -> syn::Result<Self> {
        const JOIN_FORM: &str = "expected `table_join(\"left_topic\", \"right_topic\", \"inner\" | \"left\" | \"outer\")`";
        let strings: Vec<&syn::LitStr> = call
            .args
            .iter()
            .filter_map(|a| match a {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s),
                _ => None,
            })
            .collect();
        let [left, right, kind] = strings[..] else {
            return Err(syn::Error::new_spanned(call, JOIN_FORM));
        };
        if call.args.len() != 3 {
            return Err(syn::Error::new_spanned(call, JOIN_FORM));
        }
        let Some((_, variant)) = JOIN_KINDS.iter().find(|(k, _)| *k == kind.value()) else {
            return Err(syn::Error::new_spanned(
                kind,
                format!(
                    "unknown table join `{}`; expected `inner`, `left` or `outer`",
                    kind.value()
                ),
            ));
        };
        Ok(TableArg::Join {
            left: left.clone(),
            right: right.clone(),
            kind: syn::Ident::new(variant, kind.span()),
        })
    }
}

/// What `#[agent(...)]` says: the topics, sink, tables and failure policy of the agent.
#[derive(Default)]
pub(super) struct AgentArgs {
    pub(super) topic: Option<TopicArg>,
    /// `channel = "alerts"`: the single source is an in-memory channel (`topic` holds its name).
    pub(super) channel: bool,
    /// `topics(binding = "topic", ...)`: one typed stream per parameter.
    pub(super) topics: Vec<(syn::Ident, TopicArg)>,
    pub(super) concurrency: Option<usize>,
    pub(super) sink: Option<TopicArg>,
    pub(super) group: Option<syn::LitStr>,
    /// `tables(binding = "table_name", other = table_of("topic"), ...)`
    pub(super) tables: Vec<(syn::Ident, TableArg)>,
    /// `global_tables(binding = "topic", ...)`
    pub(super) global_tables: Vec<(syn::Ident, syn::LitStr)>,
    /// `on_error = "retry"`: one of the policy names.
    pub(super) on_error: Option<syn::LitStr>,
    pub(super) dead_letter: Option<TopicArg>,
    /// `offset_reset = "latest"`: one of `OFFSET_RESETS`.
    pub(super) offset_reset: Option<syn::LitStr>,
    pub(super) retries: Option<syn::LitInt>,
    pub(super) retry_backoff_ms: Option<syn::LitInt>,
}

impl AgentArgs {
    /// Parses the arguments, collecting every mistake in `cx`.
    pub(super) fn from_tokens(cx: &mut Ctxt, tokens: TokenStream) -> Self {
        let mut args = AgentArgs::default();
        parse_arg_list(cx, tokens, |cx, meta| args.parse_arg(cx, &meta));
        args.check_retry_settings(cx);
        args
    }

    fn parse_arg(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let key = meta.path.get_ident().map(ToString::to_string);
        match key.as_deref() {
            Some("topic") => {
                let topic = TopicArg::parse(meta)?;
                set_once(cx, &mut self.topic, meta, topic, "agent");
            }
            Some("channel") => {
                let name: syn::LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(syn::Error::new_spanned(
                        &name,
                        "channel names cannot be empty",
                    ));
                }
                if self.topic.is_some() {
                    return Err(meta.error("an agent reads one topic or one channel, not both"));
                }
                self.channel = true;
                self.topic = Some(TopicArg::Name(name));
            }
            Some("topics") => parse_bindings(
                cx,
                meta,
                &mut self.topics,
                "expected `binding = \"topic\"`",
                "stream",
                TopicArg::parse,
            )?,
            Some("sink") => {
                let topic = TopicArg::parse(meta)?;
                set_once(cx, &mut self.sink, meta, topic, "agent");
            }
            Some("concurrency") => self.parse_concurrency(cx, meta)?,
            Some("tables") => parse_bindings(
                cx,
                meta,
                &mut self.tables,
                "expected `binding = \"table_name\"` or `binding = table_of(\"topic\")`",
                "table",
                TableArg::parse,
            )?,
            Some("global_tables") => parse_bindings(
                cx,
                meta,
                &mut self.global_tables,
                "expected `binding = \"topic\"`",
                "global table",
                parse_str,
            )?,
            Some("on_error") => {
                parse_choice(
                    cx,
                    meta,
                    &mut self.on_error,
                    POLICIES,
                    "`on_error` policy",
                    "agent",
                )?;
            }
            Some("offset_reset") => {
                parse_choice(
                    cx,
                    meta,
                    &mut self.offset_reset,
                    OFFSET_RESETS,
                    "`offset_reset`",
                    "agent",
                )?;
            }
            Some("dead_letter") => {
                let topic = TopicArg::parse(meta)?;
                set_once(cx, &mut self.dead_letter, meta, topic, "agent");
            }
            Some("retries") => {
                if let Some(n) = parse_whole_number(cx, meta)? {
                    set_once(cx, &mut self.retries, meta, n, "agent");
                }
            }
            Some("retry_backoff_ms") => {
                if let Some(ms) = parse_whole_number(cx, meta)? {
                    set_once(cx, &mut self.retry_backoff_ms, meta, ms, "agent");
                }
            }
            Some("group") => {
                let group = parse_str(meta)?;
                set_once(cx, &mut self.group, meta, group, "agent");
            }
            _ => unknown_argument(cx, meta, "agent", AGENT_KEYS)?,
        }
        Ok(())
    }

    fn parse_concurrency(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        let lit: syn::LitInt = meta.value()?.parse()?;
        match lit.base10_parse::<usize>() {
            Ok(n) if n >= 1 => set_once(cx, &mut self.concurrency, meta, n, "agent"),
            _ => cx.error(
                &lit,
                "`concurrency` is a whole number of instances, at least 1",
            ),
        }
        Ok(())
    }

    /// `retries` and `retry_backoff_ms` mean nothing without a policy that retries.
    fn check_retry_settings(&self, cx: &mut Ctxt) {
        let retrying = self
            .on_error
            .as_ref()
            .is_some_and(|p| p.value().starts_with("retry"));
        for lit in [&self.retries, &self.retry_backoff_ms]
            .into_iter()
            .flatten()
        {
            if !retrying {
                cx.error(
                    lit,
                    "`retries` and `retry_backoff_ms` go with `on_error = \"retry\"` or `\"retry_topics\"`",
                );
            }
        }
    }
}

/// An integer literal that fits a `u32`, or `None` after reporting one that does not.
fn parse_whole_number(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<Option<syn::LitInt>> {
    let lit: syn::LitInt = meta.value()?.parse()?;
    if lit.base10_parse::<u32>().is_err() {
        cx.error(&lit, "expected a whole number");
        return Ok(None);
    }
    Ok(Some(lit))
}
