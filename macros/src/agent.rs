//! `#[agent]`: keeps the user's `async fn` as written and adds a registration: a type-namespace
//! item of the same name whose `agent()` builds the `rill::AgentSpec`, submitted to the
//! runtime's registry with `inventory`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::{TopicArg, expected_one_of, parse_arg_list, set_once, unknown_argument};
use crate::ctxt::{Ctxt, with_errors};

const KEYS: &[&str] = &[
    "topic",
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
];

const POLICIES: &[&str] = &["dead_letter", "retry", "retry_topics", "skip", "stop"];

#[derive(Default)]
struct Args {
    topic: Option<TopicArg>,
    /// `topics(binding = "topic", ...)`: one typed stream per parameter.
    topics: Vec<(syn::Ident, TopicArg)>,
    concurrency: Option<usize>,
    sink: Option<TopicArg>,
    group: Option<syn::LitStr>,
    /// `tables(binding = "table_name", ...)`
    tables: Vec<(syn::Ident, syn::LitStr)>,
    /// `global_tables(binding = "topic", ...)`
    global_tables: Vec<(syn::Ident, syn::LitStr)>,
    /// `on_error = "retry"`: checked against the policy names.
    on_error: Option<syn::LitStr>,
    dead_letter: Option<TopicArg>,
    retries: Option<syn::LitInt>,
    retry_backoff_ms: Option<syn::LitInt>,
}

enum Param {
    /// A `Stream<T>` parameter, with its binding name when it is a plain one.
    Stream(Option<syn::Ident>, syn::Type),
    Sink(syn::Type),
    /// A `Table<K, V>` parameter, by its binding name.
    Table(syn::Ident, syn::Type),
    /// A `GlobalTable<K, V>` parameter, by its binding name.
    Global(syn::Ident, syn::Type),
}

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(input.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new_spanned(&input, "`#[agent]` goes on an `async fn`");
            return with_errors(input, err);
        }
    };
    let mut cx = Ctxt::default();
    let args = parse_args(&mut cx, args);
    if func.sig.asyncness.is_none() {
        cx.error(func.sig.fn_token, "`#[agent]` functions must be `async fn`");
    }
    if !func.sig.generics.params.is_empty() {
        cx.error(&func.sig.generics, "`#[agent]` functions cannot be generic");
    }
    let mut params = Vec::new();
    for input in &func.sig.inputs {
        match input {
            syn::FnArg::Receiver(r) => cx.error(r, "`#[agent]` functions are free functions, not methods"),
            syn::FnArg::Typed(pat) => match classify(&pat.ty) {
                Some(Param::Table(_, ty)) => match &*pat.pat {
                    syn::Pat::Ident(binding) => params.push(Param::Table(binding.ident.clone(), ty)),
                    other => cx.error(other, "a `Table` parameter needs a plain name, e.g. `totals: Table<String, u64>`"),
                },
                Some(Param::Global(_, ty)) => match &*pat.pat {
                    syn::Pat::Ident(binding) => params.push(Param::Global(binding.ident.clone(), ty)),
                    other => cx.error(other, "a `GlobalTable` parameter needs a plain name, e.g. `users: GlobalTable<String, User>`"),
                },
                Some(Param::Stream(_, ty)) => {
                    let binding = match &*pat.pat {
                        syn::Pat::Ident(binding) => Some(binding.ident.clone()),
                        _ => None,
                    };
                    params.push(Param::Stream(binding, ty));
                }
                Some(p) => params.push(p),
                None => cx.error(
                    &pat.ty,
                    "unsupported agent parameter; an agent takes a `Stream<T>`, optionally a `Sink<U>`, and `Table<K, V>`s or `GlobalTable<K, V>`s",
                ),
            },
        }
    }
    let streams = params
        .iter()
        .filter(|p| matches!(p, Param::Stream(..)))
        .count();
    let sinks = params
        .iter()
        .filter(|p| matches!(p, Param::Sink(_)))
        .count();
    if streams == 0 {
        cx.error(
            &func.sig.ident,
            "an agent takes a `Stream<T>` parameter, e.g. `views: Stream<PageView>`",
        );
    } else if streams > 1 && args.topics.is_empty() {
        cx.error(
            &func.sig.inputs,
            "an agent takes one `Stream<T>` per topic; for several, name them: `topics(views = \"pageviews\", clicks = \"clicks\")`",
        );
    }
    if !args.topics.is_empty() {
        if let Some(topic) = &args.topic {
            let span = match topic {
                TopicArg::Name(lit) => lit.span(),
                TopicArg::Const(path) => path.span(),
            };
            cx.error_at(span, "give either `topic` or `topics`, not both");
        }
        for p in &params {
            match p {
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
            if !params
                .iter()
                .any(|p| matches!(p, Param::Stream(Some(i), _) if i == binding))
            {
                cx.error(
                    binding,
                    format!("`topics({binding} = ...)` has no `{binding}: Stream<T>` parameter"),
                );
            }
        }
    }
    if sinks > 1 {
        cx.error(&func.sig.inputs, "an agent takes at most one `Sink<U>`");
    }
    for p in &params {
        if let Param::Table(ident, _) = p
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
    for p in &params {
        if let Param::Global(ident, _) = p
            && !args.global_tables.iter().any(|(b, _)| b == ident)
        {
            cx.error(ident, format!("the global table parameter `{ident}` needs its topic: `global_tables({ident} = \"...\")`"));
        }
    }
    for (binding, _) in &args.global_tables {
        if !params
            .iter()
            .any(|p| matches!(p, Param::Global(i, _) if i == binding))
        {
            cx.error(binding, format!("`global_tables({binding} = ...)` has no `{binding}: GlobalTable<K, V>` parameter"));
        }
    }
    for (binding, _) in &args.tables {
        if !params
            .iter()
            .any(|p| matches!(p, Param::Table(i, _) if i == binding))
        {
            cx.error(
                binding,
                format!("`tables({binding} = ...)` has no `{binding}: Table<K, V>` parameter"),
            );
        }
    }
    if args.topic.is_none() && args.topics.is_empty() {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "missing `topic`: `#[agent(topic = \"pageviews\")]`",
        );
    }
    match (&args.sink, sinks) {
        (Some(_), 0) => cx.error(
            &func.sig.ident,
            "`sink` is set but the function has no `Sink<U>` parameter to write to it",
        ),
        (None, 1) => cx.error(
            &func.sig.ident,
            "the `Sink<U>` parameter needs a `sink` topic: `#[agent(topic = ..., sink = \"out\")]`",
        ),
        _ => {}
    }
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#func), e);
    }
    generate(&func, &args, &params)
}

fn parse_args(cx: &mut Ctxt, args: TokenStream) -> Args {
    let mut out = Args::default();
    parse_arg_list(cx, args, |cx, meta| {
        if meta.path.is_ident("topic") {
            let t = TopicArg::parse(&meta)?;
            set_once(cx, &mut out.topic, &meta, t, "agent");
        } else if meta.path.is_ident("topics") {
            meta.parse_nested_meta(|topic| {
                let Some(binding) = topic.path.get_ident().cloned() else {
                    cx.error(&topic.path, "expected `binding = \"topic\"`");
                    return Ok(());
                };
                let t = TopicArg::parse(&topic)?;
                if out.topics.iter().any(|(b, _)| *b == binding) {
                    cx.error(&binding, format!("duplicate stream `{binding}`"));
                } else {
                    out.topics.push((binding, t));
                }
                Ok(())
            })?;
        } else if meta.path.is_ident("sink") {
            let t = TopicArg::parse(&meta)?;
            set_once(cx, &mut out.sink, &meta, t, "agent");
        } else if meta.path.is_ident("concurrency") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            match lit.base10_parse::<usize>() {
                Ok(n) if n >= 1 => set_once(cx, &mut out.concurrency, &meta, n, "agent"),
                _ => cx.error(
                    &lit,
                    "`concurrency` is a whole number of instances, at least 1",
                ),
            }
        } else if meta.path.is_ident("tables") {
            meta.parse_nested_meta(|table| {
                let Some(binding) = table.path.get_ident().cloned() else {
                    cx.error(&table.path, "expected `binding = \"table_name\"`");
                    return Ok(());
                };
                let name: syn::LitStr = table.value()?.parse()?;
                if out.tables.iter().any(|(b, _)| *b == binding) {
                    cx.error(&binding, format!("duplicate table `{binding}`"));
                } else {
                    out.tables.push((binding, name));
                }
                Ok(())
            })?;
        } else if meta.path.is_ident("global_tables") {
            meta.parse_nested_meta(|table| {
                let Some(binding) = table.path.get_ident().cloned() else {
                    cx.error(&table.path, "expected `binding = \"topic\"`");
                    return Ok(());
                };
                let name: syn::LitStr = table.value()?.parse()?;
                if out.global_tables.iter().any(|(b, _)| *b == binding) {
                    cx.error(&binding, format!("duplicate global table `{binding}`"));
                } else {
                    out.global_tables.push((binding, name));
                }
                Ok(())
            })?;
        } else if meta.path.is_ident("on_error") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            if POLICIES.contains(&lit.value().as_str()) {
                set_once(cx, &mut out.on_error, &meta, lit, "agent");
            } else {
                cx.error(
                    &lit,
                    format!(
                        "unknown `on_error` policy `{}`; {}",
                        lit.value(),
                        expected_one_of(POLICIES)
                    ),
                );
            }
        } else if meta.path.is_ident("dead_letter") {
            let t = TopicArg::parse(&meta)?;
            set_once(cx, &mut out.dead_letter, &meta, t, "agent");
        } else if meta.path.is_ident("retries") || meta.path.is_ident("retry_backoff_ms") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            if lit.base10_parse::<u32>().is_err() {
                cx.error(&lit, "expected a whole number");
            } else if meta.path.is_ident("retries") {
                set_once(cx, &mut out.retries, &meta, lit, "agent");
            } else {
                set_once(cx, &mut out.retry_backoff_ms, &meta, lit, "agent");
            }
        } else if meta.path.is_ident("group") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            set_once(cx, &mut out.group, &meta, lit, "agent");
        } else {
            unknown_argument(cx, &meta, "agent", KEYS)?;
        }
        Ok(())
    });
    let retrying = out
        .on_error
        .as_ref()
        .is_some_and(|p| p.value().starts_with("retry"));
    for lit in [&out.retries, &out.retry_backoff_ms].into_iter().flatten() {
        if !retrying {
            cx.error(
                lit,
                "`retries` and `retry_backoff_ms` go with `on_error = \"retry\"` or `\"retry_topics\"`",
            );
        }
    }
    out
}

/// `Stream<T>` / `Sink<T>` by the last path segment (also `rill::Stream<T>`).
fn classify(ty: &syn::Type) -> Option<Param> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let inner = match args.args.first()? {
        syn::GenericArgument::Type(t) => t.clone(),
        _ => return None,
    };
    if args.args.len() != 1 && last.ident != "Table" && last.ident != "GlobalTable" {
        return None;
    }
    match last.ident.to_string().as_str() {
        "Stream" => Some(Param::Stream(None, inner)),
        "Sink" => Some(Param::Sink(inner)),
        "Table" if args.args.len() == 2 => Some(Param::Table(last.ident.clone(), ty.clone())),
        "GlobalTable" if args.args.len() == 2 => {
            Some(Param::Global(last.ident.clone(), ty.clone()))
        }
        _ => None,
    }
}

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

fn generate(func: &syn::ItemFn, args: &Args, params: &[Param]) -> TokenStream {
    let name = &func.sig.ident;
    let vis = &func.vis;
    let name_str = name.to_string();
    let stream_ty = params.iter().find_map(|p| match p {
        Param::Stream(_, t) => Some(t),
        _ => None,
    });
    let sink_ty = params.iter().find_map(|p| match p {
        Param::Sink(t) => Some(t),
        _ => None,
    });
    let Some(stream_ty) = stream_ty else {
        return quote!(#func);
    };
    let stream_var = format_ident!("__rill_stream");
    // One source per topic; each stream parameter takes its own topic's stream.
    let (sources, take_streams) = match &args.topic {
        Some(topic) => {
            let source = topic_spec(topic, stream_ty);
            let take = quote! {
                let #stream_var = match __rill_ctx.stream::<#stream_ty>() {
                    ::core::result::Result::Ok(s) => s,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
                };
            };
            (vec![quote!(.source(#source))], vec![take])
        }
        None => {
            let typed = |binding: &syn::Ident| {
                params.iter().find_map(|p| match p {
                    Param::Stream(Some(i), ty) if i == binding => Some(ty),
                    _ => None,
                })
            };
            let mut sources = Vec::new();
            let mut takes = Vec::new();
            for (binding, topic) in &args.topics {
                let Some(ty) = typed(binding) else { continue };
                let spec = topic_spec(topic, ty);
                sources.push(quote!(.source(#spec)));
                let name = match topic {
                    TopicArg::Name(lit) => quote!(#lit),
                    TopicArg::Const(path) => quote!(#path.name()),
                };
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
    };
    let sink = match (&args.sink, sink_ty) {
        (Some(arg), Some(ty)) => {
            let spec = topic_spec(arg, ty);
            quote!(.sink(#spec))
        }
        _ => quote!(),
    };
    let concurrency = args.concurrency.unwrap_or(1);
    let group = args.group.as_ref().map(|g| quote!(.group(#g)));
    let on_error = policy(args.on_error.as_ref().map(syn::LitStr::value), args);
    let dead_letter = args.dead_letter.as_ref().map(|t| match t {
        TopicArg::Name(name) => quote!(.dead_letter(#name)),
        TopicArg::Const(path) => quote!(.dead_letter(#path.name())),
    });
    let sink_var = format_ident!("__rill_sink");
    let multi = args.topic.is_none();
    let co_partitioned = multi.then(|| quote!(.co_partitioned()));
    let call_args = params.iter().map(|p| match p {
        Param::Stream(Some(ident), _) if multi => {
            let var = format_ident!("__rill_stream_{}", ident);
            quote!(#var)
        }
        Param::Stream(..) => quote!(#stream_var),
        Param::Sink(_) => quote!(#sink_var),
        Param::Table(ident, _) | Param::Global(ident, _) => {
            let var = format_ident!("__rill_table_{}", ident);
            quote!(#var)
        }
    });
    let global_specs = args
        .global_tables
        .iter()
        .map(|(_, topic)| quote!(.global_table(#topic)));
    let take_globals = params.iter().filter_map(|p| match p {
        Param::Global(ident, ty) => {
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
    let table_specs = args.tables.iter().map(|(_, name)| quote!(.table(#name)));
    let take_tables = params.iter().filter_map(|p| match p {
        Param::Table(ident, ty) => {
            let var = format_ident!("__rill_table_{}", ident);
            let name = &args.tables.iter().find(|(b, _)| b == ident)?.1;
            Some(quote! {
                let #var: #ty = match __rill_ctx.table(#name) {
                    ::core::result::Result::Ok(t) => t,
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
                };
            })
        }
        _ => None,
    });
    let take_sink = sink_ty.map(|ty| {
        quote! {
            let #sink_var = match __rill_ctx.sink::<#ty>() {
                ::core::result::Result::Ok(s) => s,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(e),
            };
        }
    });
    // Spanned on the return type, so a wrong one is reported there.
    let ret_span = match &func.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => func.sig.ident.span(),
    };
    let call = quote_spanned! {ret_span=>
        ::rill::AgentResult::into_result(#name(#(#call_args),*).await)
    };
    let doc =
        format!("Registration of the `{name_str}` agent; `{name_str}::agent()` describes it.");
    quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        #[automatically_derived]
        impl #name {
            /// The agent's description, for `App::agents` and the worker.
            pub fn agent() -> ::rill::AgentSpec {
                ::rill::AgentSpec::new(#name_str, ::core::concat!(::core::file!(), ":", ::core::line!()))
                    #(#sources)*
                    #co_partitioned
                    #sink
                    .concurrency(#concurrency)
                    #group
                    #on_error
                    #dead_letter
                    #(#table_specs)*
                    #(#global_specs)*
                    .run(|mut __rill_ctx: ::rill::AgentContext| async move {
                        #(#take_streams)*
                        #take_sink
                        #(#take_tables)*
                        #(#take_globals)*
                        #call
                    })
            }
        }

        ::rill::__private::inventory::submit! {
            ::rill::Registration { build: #name::agent }
        }
    }
}

/// `.on_error(...)` from `on_error`, `retries` and `retry_backoff_ms`.
fn policy(name: Option<String>, args: &Args) -> TokenStream {
    let Some(name) = name else {
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
