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
