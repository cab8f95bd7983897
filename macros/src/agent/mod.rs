//! `#[agent]`: keeps the user's `async fn` as written and adds a registration: a type-namespace
//! item of the same name whose `agent()` builds the `rill::AgentSpec`, submitted to the
//! runtime's registry with `inventory`.
//!
//! Laid out like serde_derive's internals: the arguments are parsed into a model ([`args`]), the
//! function's parameters into another ([`params`]), the rules between the two are checked
//! ([`check`]), and only an agent with no errors is generated ([`expand`]). Every error found on
//! the way is collected and reported together.

mod args;
mod check;
mod expand;
mod params;

use proc_macro2::TokenStream;
use quote::quote;

use crate::ctxt::{Ctxt, with_errors};

/// `#[agent(args)] input`: the function unchanged, plus its registration or the errors.
pub(crate) fn expand_agent(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: syn::ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new_spanned(&input, "`#[agent]` goes on an `async fn`");
            return with_errors(input, err);
        }
    };
    let mut cx = Ctxt::default();
    let args = args::AgentArgs::from_tokens(&mut cx, args);
    let agent_fn = params::AgentFn::from_item(&mut cx, &item);
    check::check_agent(&mut cx, &args, &agent_fn);
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#item), e);
    }
    expand::expand_registration(&args, &agent_fn)
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::expand_agent;
    use crate::ctxt::compile_error_messages;

    #[test]
    fn every_mistake_is_reported_in_one_expansion_in_order() {
        let out = expand_agent(
            quote!(topc = "x", concurrency = 0),
            quote!(
                fn f<T>(n: u32, totals: Table<String, u64>) {}
            ),
        );
        assert_eq!(
            compile_error_messages(out.clone()),
            [
                "unknown `agent` argument `topc`; expected one of `topic`, `channel`, `topics`, `concurrency`, `sink`, `group`, `tables`, `global_tables`, `on_error`, `dead_letter`, `retries`, `retry_backoff_ms`, `offset_reset`",
                "`concurrency` is a whole number of instances, at least 1",
                "`#[agent]` functions must be `async fn`",
                "`#[agent]` functions cannot be generic",
                "unsupported agent parameter; an agent takes a `Stream<T>`, optionally a `Sink<U>`, `Table<K, V>`s or `GlobalTable<K, V>`s, and `Requests`",
                "an agent takes a `Stream<T>` parameter, e.g. `views: Stream<PageView>`",
                "the table parameter `totals` needs a table name: `tables(totals = \"...\")`",
                "missing `topic`: `#[agent(topic = \"pageviews\")]`",
            ]
        );
        // The function is kept as written, so the rest of the code still type-checks.
        let kept = out.into_iter().take(2).map(|t| t.to_string());
        assert_eq!(kept.collect::<Vec<_>>(), ["fn", "f"]);
    }

    #[test]
    fn a_correct_agent_gets_a_registration() {
        let out = expand_agent(
            quote!(
                topics(views = "views", clicks = CLICKS),
                sink = "out",
                tables(totals = "t")
            ),
            quote!(
                async fn joined(
                    views: Stream<View>,
                    clicks: rill::Stream<Click>,
                    out: Sink<Joined>,
                    totals: Table<String, u64>,
                ) -> rill::Result<()> {
                    Ok(())
                }
            ),
        );
        assert!(compile_error_messages(out.clone()).is_empty());
        let file: syn::File = syn::parse2(out).expect("the expansion is valid Rust");
        let kinds: Vec<&str> = file
            .items
            .iter()
            .map(|item| match item {
                syn::Item::Fn(_) => "fn",
                syn::Item::Struct(_) => "struct",
                syn::Item::Impl(_) => "impl",
                syn::Item::Macro(_) => "macro",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["fn", "struct", "impl", "macro"]);
    }
}
