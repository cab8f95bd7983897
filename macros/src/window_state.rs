//! `#[window_state]`: makes a struct (or enum) a window accumulator's stored form. It derives the serde
//! plumbing (the state is kept in the table store and its changelog) and checks, with errors on
//! the struct, that it is `Default` (the empty window) and `Clone` (what a result carries).
//! The user implements `rill::WindowState<T>` (`add`) and, for session windows,
//! `rill::MergeState` (`merge`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::ctxt::with_errors;

/// `#[window_state] input`: the type with its serde derives and the `Default + Clone` check.
pub(crate) fn expand_window_state(args: TokenStream, input: TokenStream) -> TokenStream {
    if !args.is_empty() {
        let err = syn::Error::new_spanned(&args, "`#[window_state]` takes no arguments");
        return with_errors(input, err);
    }
    let state: syn::DeriveInput = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new_spanned(
                &input,
                "`#[window_state]` goes on a struct or enum: the accumulator a window keeps per key",
            );
            return with_errors(input, err);
        }
    };
    if let syn::Data::Union(u) = &state.data {
        let err = syn::Error::new_spanned(
            u.union_token,
            "`#[window_state]` goes on a struct or enum, not a union",
        );
        return with_errors(input, err);
    }
    let name = &state.ident;
    // Generic states are checked where they are used (`WindowState` requires both traits).
    let bounds_check = state.generics.params.is_empty().then(|| {
        quote_spanned! {name.span()=>
            const _: fn() = || {
                fn window_state_is_default_and_clone<S: ::core::default::Default + ::core::clone::Clone>() {}
                window_state_is_default_and_clone::<#name>();
            };
        }
    });
    quote! {
        #[derive(::rill::__private::serde::Serialize, ::rill::__private::serde::Deserialize)]
        #[serde(crate = "::rill::__private::serde")]
        #state
        #bounds_check
    }
}
