//! Generation of a checked agent: the function as written, a type-namespace item of the same
//! name whose `agent()` builds the `rill::AgentSpec`, and its `inventory` registration. The spec's
//! run closure takes each parameter's value from the `AgentContext` and calls the function.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::args::{AgentArgs, TableArg, TopicArg};
use super::params::{AgentFn, Param};

/// The function, its registration item and the `inventory` submission.
pub(super) fn expand_registration(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> TokenStream {
    let item = agent_fn.item;
    // Unreachable after `check` (an agent without a stream is an error), but harmless.
    let Some(spec) = agent_spec(args, agent_fn) else {
        return quote!(#item);
    };
    let kind = crate::registration::Kind {
        name: "agent",
        spec: quote!(::rill::AgentSpec),
        registration: quote!(::rill::Registration),
        used_by: "`App::agents` and the worker",
    };
    let registered = crate::registration::register(item, &kind, &spec);
    let asking = asking(args, agent_fn);
    quote!(#registered #asking)
}

/// `agent::ask(&requests, &value)` and `agent::cast(..)` for an agent reading one topic
/// (Faust's `agent.ask`/`agent.cast`): the topic and value type come from the agent.
fn asking(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> TokenStream {
    let (Some(topic), Some(ty)) = (&args.topic, agent_fn.first_stream_type()) else {
        return quote!();
    };
    let name = &agent_fn.item.sig.ident;
    let topic = topic.name_expr();
    let ask_doc = format!(
        "Asks `{name}`: sends `value` to its topic and waits for the value it replies with \
         (`Request::reply`); `.timeout(..)` bounds the wait."
    );
    let cast_doc = format!("Sends `value` to `{name}`'s topic without waiting for a reply.");
    quote! {
        #[automatically_derived]
        impl #name {
            #[doc = #ask_doc]
            pub fn ask<__RillReply>(
                requests: &::rill::Requests,
                value: &#ty,
            ) -> ::rill::request::Ask<__RillReply>
            where
                __RillReply: ::rill::__private::serde::de::DeserializeOwned + ::core::marker::Send + 'static,
            {
                requests.ask(#topic, value)
            }

            #[doc = #cast_doc]
            pub async fn cast(requests: &::rill::Requests, value: &#ty) -> ::rill::Result<()> {
                requests.cast(#topic, value).await
            }
        }
    }
}

/// The `AgentSpec` builder expression, or `None` if the function has no stream.
fn agent_spec(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> Option<TokenStream> {
    let stream_ty = agent_fn.first_stream_type()?;
    let name_str = agent_fn.name().to_string();
    // One source per topic; each stream parameter takes its own topic's stream.
    let (sources, take_streams) = match &args.topic {
        Some(topic) => single_stream(topic, stream_ty, args.channel),
        None => named_streams(args, agent_fn),
    };
    let co_partitioned = args.topic.is_none().then(|| quote!(.co_partitioned()));
    let sink = match (&args.sink, agent_fn.sink_type()) {
        (Some(arg), Some(ty)) => {
            let spec = topic_spec(arg, ty);
            quote!(.sink(#spec))
        }
        _ => quote!(),
    };
    let concurrency = args.concurrency.unwrap_or(1);
    let group = args.group.as_ref().map(|g| quote!(.group(#g)));
    let on_error = on_error_policy(args);
    let dead_letter = args.dead_letter.as_ref().map(|topic| {
        let name = topic.name_expr();
        quote!(.dead_letter(#name))
    });
    let offset_reset = args.offset_reset.as_ref().map(|lit| {
        let variant = format_ident!(
            "{}",
            if lit.value() == "latest" {
                "Latest"
            } else {
                "Earliest"
            }
        );
        quote!(.offset_reset(::rill::OffsetReset::#variant))
    });
    let table_specs = args.tables.iter().map(|(binding, table)| match table {
        TableArg::Name(name) => quote!(.table(#name)),
        TableArg::Of(topic) => {
            let value = agent_fn.table_value_type(binding);
            quote!(.table_of::<#value>(#topic))
        }
        TableArg::Join { left, right, kind } => {
            let name = binding.to_string();
            quote!(.table_join(#name, #left, #right, ::rill::TableJoin::#kind))
        }
    });
    let global_specs = args
        .global_tables
        .iter()
        .map(|(_, topic)| quote!(.global_table(#topic)));
    let run = run_closure(args, agent_fn, take_streams);
    Some(quote! {
        ::rill::AgentSpec::new(#name_str, ::core::concat!(::core::file!(), ":", ::core::line!()))
            #(#sources)*
            #co_partitioned
            #sink
            .concurrency(#concurrency)
            #group
            #on_error
            #dead_letter
            #offset_reset
            #(#table_specs)*
            #(#global_specs)*
            .run(#run)
    })
}

/// `topic = ...`: one source, and its stream taken for the (single) stream parameter.
fn single_stream(
    topic: &TopicArg,
    ty: &syn::Type,
    channel: bool,
) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let source = match topic {
        TopicArg::Name(lit) if channel => quote! {
            ::rill::TopicSpec::in_memory::<#ty>(#lit, ::core::concat!(::core::file!(), ":", ::core::line!()))
        },
        _ => topic_spec(topic, ty),
    };
    let var = format_ident!("__rill_stream");
    let take = quote! {
        let #var = match __rill_ctx.stream::<#ty>() {
            ::core::result::Result::Ok(s) => s,
            ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
        };
    };
    (vec![quote!(.source(#source))], vec![take])
}

/// `topics(binding = ..., ...)`: a source per topic, and each topic's stream taken for the
/// stream parameter of that name.
fn named_streams(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> (Vec<TokenStream>, Vec<TokenStream>) {
    let mut sources = Vec::new();
    let mut takes = Vec::new();
    for (binding, topic) in &args.topics {
        let Some(ty) = agent_fn.stream_named(binding) else {
            continue;
        };
        let spec = topic_spec(topic, ty);
        sources.push(quote!(.source(#spec)));
        let name = topic.name_expr();
        let var = format_ident!("__rill_stream_{}", binding);
        takes.push(quote! {
            let #var = match __rill_ctx.stream_of::<#ty>(#name) {
                ::core::result::Result::Ok(s) => s,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
        });
    }
    (sources, takes)
}

/// A `TopicSpec` of items `ty`, declared at the macro's call site.
fn topic_spec(arg: &TopicArg, ty: &syn::Type) -> TokenStream {
    match arg {
        TopicArg::Name(lit) => quote! {
            ::rill::TopicSpec::of::<#ty>(#lit, ::core::concat!(::core::file!(), ":", ::core::line!()))
        },
        TopicArg::Const(path) => {
            // Spanned on the constant, so a `Topic<_, Other>` is reported against the user's type.
            let check = quote_spanned! {path.span()=>
                let __rill_topic: &::rill::Topic<_, #ty> = &#path;
            };
            quote! {{
                #check
                let mut __rill_spec = __rill_topic.spec();
                __rill_spec.declared_at = ::std::string::String::from(::core::concat!(::core::file!(), ":", ::core::line!()));
                __rill_spec
            }}
        }
    }
}

/// `.on_error(...)` from `on_error`, `retries` and `retry_backoff_ms`.
fn on_error_policy(args: &AgentArgs) -> TokenStream {
    let Some(name) = args.on_error.as_ref().map(syn::LitStr::value) else {
        return quote!();
    };
    let retries = args.retries.as_ref().map(|n| quote!(.with_attempts(#n)));
    let backoff = args
        .retry_backoff_ms
        .as_ref()
        .map(|ms| quote!(.with_backoff(::core::time::Duration::from_millis(#ms))));
    quote! {
        .on_error(
            match ::rill::OnError::from_name(#name) {
                ::core::option::Option::Some(p) => p,
                ::core::option::Option::None => ::rill::OnError::DeadLetter,
            }
            #retries
            #backoff
        )
    }
}

/// The closure the runtime runs: each parameter's value taken from the `AgentContext` (streams
/// first, in `take_streams`), then the user's function called with them.
fn run_closure(
    args: &AgentArgs,
    agent_fn: &AgentFn<'_>,
    take_streams: Vec<TokenStream>,
) -> TokenStream {
    let sink_var = format_ident!("__rill_sink");
    let take_sink = agent_fn.sink_type().map(|ty| {
        quote! {
            let #sink_var = match __rill_ctx.sink::<#ty>() {
                ::core::result::Result::Ok(s) => s,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
        }
    });
    let take_tables = table_takes(args, agent_fn);
    let take_globals = global_table_takes(args, agent_fn);
    let call = user_fn_call(args, agent_fn);
    quote! {
        |mut __rill_ctx: ::rill::AgentContext| async move {
            #(#take_streams)*
            #take_sink
            #(#take_tables)*
            #(#take_globals)*
            #call
        }
    }
}

/// `let __rill_table_<name>: Table<K, V> = ctx.table("table_name")?;` per table parameter.
fn table_takes(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> Vec<TokenStream> {
    let takes = agent_fn.params.iter().filter_map(|p| match p {
        Param::Table(ident, ty) => {
            let var = format_ident!("__rill_table_{}", ident);
            let table = &args.tables.iter().find(|(b, _)| b == ident)?.1;
            let take = match table {
                TableArg::Name(name) => quote!(__rill_ctx.table(#name)),
                TableArg::Of(topic) => quote!(__rill_ctx.table_of(#topic)),
                TableArg::Join { .. } => {
                    let name = ident.to_string();
                    quote!(__rill_ctx.table_join(#name))
                }
            };
            Some(quote! {
                let #var: #ty = match #take {
                    ::core::result::Result::Ok(t) => t,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
                };
            })
        }
        _ => None,
    });
    takes.collect()
}

/// `let __rill_table_<name>: GlobalTable<K, V> = ctx.global_table("topic")?;` per global table
/// parameter.
fn global_table_takes(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> Vec<TokenStream> {
    let takes = agent_fn.params.iter().filter_map(|p| match p {
        Param::GlobalTable(ident, ty) => {
            let var = format_ident!("__rill_table_{}", ident);
            let topic = &args.global_tables.iter().find(|(b, _)| b == ident)?.1;
            Some(quote! {
                let #var: #ty = match __rill_ctx.global_table(#topic) {
                    ::core::result::Result::Ok(t) => t,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
                };
            })
        }
        _ => None,
    });
    takes.collect()
}

/// `AgentResult::into_result(name(params...).await)`, the parameters in the function's order.
fn user_fn_call(args: &AgentArgs, agent_fn: &AgentFn<'_>) -> TokenStream {
    let named_streams = args.topic.is_none();
    let call_args = agent_fn.params.iter().map(|p| match p {
        Param::Stream(Some(ident), _) if named_streams => {
            let var = format_ident!("__rill_stream_{}", ident);
            quote!(#var)
        }
        Param::Stream(..) => quote!(__rill_stream),
        Param::Sink(_) => quote!(__rill_sink),
        Param::Table(ident, _) | Param::GlobalTable(ident, _) => {
            let var = format_ident!("__rill_table_{}", ident);
            quote!(#var)
        }
        Param::Requests => quote!(__rill_ctx.requests()),
    });
    let sig = &agent_fn.item.sig;
    // Spanned on the return type, so a wrong one is reported there.
    let ret_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.ident.span(),
    };
    let name = &sig.ident;
    quote_spanned! {ret_span=>
        ::rill::AgentResult::into_result(#name(#(#call_args),*).await)
    }
}
