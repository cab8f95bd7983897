//! `#[timer]` and `#[crontab]`: keep the user's `async fn` and add a registration, a
//! type-namespace item of the same name whose `timer()` builds the `rill::TimerSpec`, submitted
//! with `inventory` like an agent's. Parsed into a model ([`TimerArgs`], [`TimerParam`]s),
//! checked (intervals, cron expressions and time zones at compile time, with the literal's
//! span), then generated.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::meta::ParseNestedMeta;

use crate::attr::{
    check_bindings_taken, parse_arg_list, parse_choice, parse_str, parse_table_bindings, set_once,
    unknown_argument,
};
use crate::ctxt::{Ctxt, with_errors};

const TIMER_KEYS: &[&str] = &[
    "every",
    "on_leader",
    "on_error",
    "retries",
    "retry_backoff_ms",
    "tables",
];
const CRONTAB_KEYS: &[&str] = &[
    "timezone",
    "on_leader",
    "on_error",
    "retries",
    "retry_backoff_ms",
    "tables",
];
const POLICIES: &[&str] = &["skip", "retry", "stop"];

/// Which of the two attributes.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Timer,
    Crontab,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Timer => "timer",
            Kind::Crontab => "crontab",
        }
    }
}

/// What the attribute says.
#[derive(Default)]
struct TimerArgs {
    /// `every = "10s"` (or a number of seconds): the literal and its milliseconds.
    every: Option<(syn::Lit, u64)>,
    /// `every` was given, but not as an interval (already reported).
    every_invalid: bool,
    /// `#[crontab("0 20 * * *")]`.
    expression: Option<syn::LitStr>,
    timezone: Option<syn::LitStr>,
    on_leader: Option<syn::LitBool>,
    on_error: Option<syn::LitStr>,
    retries: Option<syn::LitInt>,
    retry_backoff_ms: Option<syn::LitInt>,
    tables: Vec<(syn::Ident, syn::LitStr)>,
}

/// A parameter the runtime supplies at each run.
enum TimerParam {
    Producer,
    Context,
    /// A `TableReader<K, V>`: the table's name.
    Reader(syn::LitStr),
}

/// `#[timer(args)]` / `#[crontab(args)]` on `input`.
pub(crate) fn expand_timer(kind: Kind, args: TokenStream, input: TokenStream) -> TokenStream {
    let item: syn::ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let message = format!("`#[{}]` goes on an `async fn`", kind.attr());
            let err = syn::Error::new_spanned(&input, message);
            return with_errors(input, err);
        }
    };
    let mut cx = Ctxt::default();
    let args = TimerArgs::from_tokens(&mut cx, kind, args);
    let params = params_of(&mut cx, kind, &item, &args);
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#item), e);
    }
    generate(kind, &item, &args, &params)
}

impl TimerArgs {
    fn from_tokens(cx: &mut Ctxt, kind: Kind, tokens: TokenStream) -> Self {
        let mut args = TimerArgs::default();
        let rest = match kind {
            Kind::Crontab => args.take_expression(cx, tokens),
            Kind::Timer => tokens,
        };
        let keys = match kind {
            Kind::Timer => TIMER_KEYS,
            Kind::Crontab => CRONTAB_KEYS,
        };
        parse_arg_list(cx, rest, |cx, meta| args.parse_arg(cx, kind, keys, &meta));
        args.check(cx, kind);
        args
    }

    /// The leading cron expression of `#[crontab("...", ...)]`; returns the arguments after it.
    fn take_expression(&mut self, cx: &mut Ctxt, tokens: TokenStream) -> TokenStream {
        let mut iter = tokens.into_iter().peekable();
        if let Some(TokenTree::Literal(lit)) = iter.peek() {
            let lit = syn::Lit::new(lit.clone());
            if let syn::Lit::Str(s) = lit {
                iter.next();
                check_cron(cx, &s);
                self.expression = Some(s);
                if let Some(TokenTree::Punct(p)) = iter.peek()
                    && p.as_char() == ','
                {
                    iter.next();
                }
            }
        }
        iter.collect()
    }

    fn parse_arg(
        &mut self,
        cx: &mut Ctxt,
        kind: Kind,
        keys: &[&str],
        meta: &ParseNestedMeta<'_>,
    ) -> syn::Result<()> {
        let owner = kind.attr();
        let key = meta.path.get_ident().map(ToString::to_string);
        match key.as_deref() {
            Some("every") if kind == Kind::Timer => {
                let lit: syn::Lit = meta.value()?.parse()?;
                match interval_ms(&lit) {
                    Ok(ms) => set_once(cx, &mut self.every, meta, (lit, ms), owner),
                    Err(message) => {
                        self.every_invalid = true;
                        cx.error(&lit, message);
                    }
                }
            }
            Some("timezone") if kind == Kind::Crontab => {
                let zone = parse_str(meta)?;
                if zone.value().parse::<chrono_tz::Tz>().is_err() {
                    cx.error(
                        &zone,
                        format!(
                            "`{}` is not an IANA time zone; e.g. \"UTC\" or \"Europe/Paris\"",
                            zone.value()
                        ),
                    );
                }
                set_once(cx, &mut self.timezone, meta, zone, owner);
            }
            Some("on_leader") => {
                let b: syn::LitBool = meta.value()?.parse()?;
                set_once(cx, &mut self.on_leader, meta, b, owner);
            }
            Some("on_error") => {
                parse_choice(
                    cx,
                    meta,
                    &mut self.on_error,
                    POLICIES,
                    "timer `on_error` policy",
                    owner,
                )?;
            }
            Some("retries") => {
                let n: syn::LitInt = meta.value()?.parse()?;
                set_once(cx, &mut self.retries, meta, n, owner);
            }
            Some("retry_backoff_ms") => {
                let n: syn::LitInt = meta.value()?.parse()?;
                set_once(cx, &mut self.retry_backoff_ms, meta, n, owner);
            }
            Some("tables") => parse_table_bindings(cx, meta, &mut self.tables)?,
            _ => unknown_argument(cx, meta, owner, keys)?,
        }
        Ok(())
    }

    fn check(&self, cx: &mut Ctxt, kind: Kind) {
        match kind {
            Kind::Timer if self.every.is_none() && !self.every_invalid => cx.error_at(
                proc_macro2::Span::call_site(),
                "missing `every`: `#[timer(every = \"10s\")]`",
            ),
            Kind::Crontab if self.expression.is_none() => cx.error_at(
                proc_macro2::Span::call_site(),
                "missing the cron expression: `#[crontab(\"0 20 * * *\", timezone = \"Europe/Paris\")]`",
            ),
            _ => {}
        }
        let retrying = self.on_error.as_ref().is_some_and(|p| p.value() == "retry");
        for lit in [&self.retries, &self.retry_backoff_ms]
            .into_iter()
            .flatten()
        {
            if !retrying {
                cx.error(
                    lit,
                    "`retries` and `retry_backoff_ms` go with `on_error = \"retry\"`",
                );
            } else if lit.base10_parse::<u32>().is_err() {
                cx.error(lit, "expected a whole number");
            }
        }
    }
}

/// Milliseconds of `"10s"`, `"500ms"`, `"5m"`, `"2h"`, `"1d"` (decimals allowed), or of a
/// number of seconds (`10`, `0.5`: Faust's `interval=10.0`).
fn interval_ms(lit: &syn::Lit) -> Result<u64, String> {
    const FORM: &str =
        "expected an interval: \"500ms\", \"10s\", \"5m\", \"2h\", \"1d\", or a number of seconds";
    let (number, unit_ms) = match lit {
        syn::Lit::Str(s) => {
            let text = s.value();
            let text = text.trim();
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or(FORM)?;
            let unit = match &text[split..] {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                _ => return Err(FORM.into()),
            };
            (text[..split].parse::<f64>().map_err(|_| FORM)?, unit)
        }
        syn::Lit::Int(i) => (i.base10_parse::<f64>().map_err(|_| FORM)?, 1_000.0),
        syn::Lit::Float(f) => (f.base10_parse::<f64>().map_err(|_| FORM)?, 1_000.0),
        _ => return Err(FORM.into()),
    };
    let ms = (number * unit_ms).round();
    if !(1.0..=1e15).contains(&ms) {
        return Err("a timer's interval must be at least 1 ms".into());
    }
    Ok(ms as u64)
}

fn check_cron(cx: &mut Ctxt, expression: &syn::LitStr) {
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(&expression.value());
    if let Err(e) = parsed {
        cx.error(
            expression,
            format!("not a cron expression ({e}); five fields: minute hour day-of-month month day-of-week, e.g. \"0 20 * * *\""),
        );
    }
}

/// The parameters, classified by type: `Producer`, `TimerContext`, `TableReader<K, V>`.
fn params_of(cx: &mut Ctxt, kind: Kind, item: &syn::ItemFn, args: &TimerArgs) -> Vec<TimerParam> {
    let attr = kind.attr();
    if item.sig.asyncness.is_none() {
        cx.error(
            item.sig.fn_token,
            format!("`#[{attr}]` functions must be `async fn`"),
        );
    }
    if !item.sig.generics.params.is_empty() {
        cx.error(
            &item.sig.generics,
            format!("`#[{attr}]` functions cannot be generic"),
        );
    }
    let mut params = Vec::new();
    for input in &item.sig.inputs {
        let syn::FnArg::Typed(typed) = input else {
            cx.error(input, format!("`#[{attr}]` functions cannot be methods"));
            continue;
        };
        let last = match &*typed.ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        let binding = match &*typed.pat {
            syn::Pat::Ident(p) => Some(p.ident.clone()),
            _ => None,
        };
        match last.as_deref() {
            Some("Producer") => params.push(TimerParam::Producer),
            Some("TimerContext") => params.push(TimerParam::Context),
            Some("TableReader") => match reader_table(cx, args, binding.as_ref(), &typed.ty) {
                Some(table) => params.push(TimerParam::Reader(table)),
                None => continue,
            },
            _ => cx.error(
                &typed.ty,
                format!("unsupported `#[{attr}]` parameter; a timer takes a `Producer`, a `TimerContext` and `TableReader<K, V>`s"),
            ),
        }
    }
    check_bindings_taken(cx, item, &args.tables);
    params
}

/// The table a `TableReader` parameter reads: `tables(binding = "name")`, else its name.
fn reader_table(
    cx: &mut Ctxt,
    args: &TimerArgs,
    binding: Option<&syn::Ident>,
    ty: &syn::Type,
) -> Option<syn::LitStr> {
    let Some(binding) = binding else {
        cx.error(ty, "a `TableReader` parameter needs a plain name (the table's, or one bound in `tables(...)`)");
        return None;
    };
    Some(crate::attr::reader_table(&args.tables, binding))
}

fn generate(
    kind: Kind,
    item: &syn::ItemFn,
    args: &TimerArgs,
    params: &[TimerParam],
) -> TokenStream {
    let name = &item.sig.ident;
    let name_str = name.to_string();
    let spec = match kind {
        Kind::Timer => {
            let ms = args.every.as_ref().map_or(1, |(_, ms)| *ms);
            quote!(::rill::TimerSpec::every(#name_str, ::std::time::Duration::from_millis(#ms)))
        }
        Kind::Crontab => {
            let expression = &args.expression;
            let zone = args
                .timezone
                .as_ref()
                .map_or_else(|| quote!("UTC"), |z| quote!(#z));
            quote!(::rill::TimerSpec::crontab(#name_str, #expression, #zone))
        }
    };
    let on_leader = args.on_leader.as_ref().map(|b| quote!(.on_leader(#b)));
    let on_error = args.on_error.as_ref().map(|p| {
        let policy = match p.value().as_str() {
            "retry" => {
                let attempts = args.retries.as_ref().map_or_else(|| quote!(3u32), |n| quote!(#n));
                let backoff = args.retry_backoff_ms.as_ref().map_or_else(|| quote!(100u64), |n| quote!(#n));
                quote!(::rill::OnError::Retry { attempts: #attempts, backoff: ::std::time::Duration::from_millis(#backoff) })
            }
            "stop" => quote!(::rill::OnError::Stop),
            _ => quote!(::rill::OnError::Skip),
        };
        quote!(.on_error(#policy))
    });
    let values = params.iter().enumerate().map(|(i, p)| {
        let var = quote::format_ident!("__rill_arg{i}");
        match p {
            TimerParam::Producer => quote!(let #var = __rill_cx.producer().clone();),
            TimerParam::Reader(table) => {
                quote_spanned!(table.span()=> let #var = __rill_cx.reader(#table)?;)
            }
            TimerParam::Context => quote!(),
        }
    });
    let call_args = params.iter().enumerate().map(|(i, p)| match p {
        TimerParam::Context => quote!(__rill_cx),
        _ => {
            let var = quote::format_ident!("__rill_arg{i}");
            quote!(#var)
        }
    });
    // The result is typed where the function declares its return type, so a wrong one is
    // reported there.
    let ret_span = match &item.sig.output {
        syn::ReturnType::Type(_, ty) => syn::spanned::Spanned::span(ty),
        syn::ReturnType::Default => item.sig.ident.span(),
    };
    let call = quote_spanned! {ret_span=>
        let __rill_result: ::rill::Result<()> = #name(#(#call_args),*).await;
        __rill_result
    };
    let kind = crate::registration::Kind {
        name: "timer",
        spec: quote!(::rill::TimerSpec),
        registration: quote!(::rill::TimerRegistration),
        used_by: "`App::timers` and the worker",
    };
    let spec = quote! {
        #spec #on_leader #on_error .run(|__rill_cx: ::rill::TimerContext| async move {
            #(#values)*
            #call
        })
    };
    crate::registration::register(item, &kind, &spec)
}
