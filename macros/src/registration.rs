//! What `#[agent]`, `#[timer]` and `#[crontab]` add beside the user's function: a
//! type-namespace item of the same name whose `<kind>()` builds the runtime's spec, submitted
//! to the runtime's registry with `inventory`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// What is registered: `agent` (an `AgentSpec` through `Registration`) or `timer` (a
/// `TimerSpec` through `TimerRegistration`).
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) spec: TokenStream,
    pub(crate) registration: TokenStream,
    /// Where the spec is used, for the builder's docs.
    pub(crate) used_by: &'static str,
}

/// `item`, the registration item of its function, and the `inventory` submission; `spec`
/// builds the description.
pub(crate) fn register(item: &syn::ItemFn, kind: &Kind, spec: &TokenStream) -> TokenStream {
    let name = &item.sig.ident;
    let vis = &item.vis;
    let name_str = name.to_string();
    let builder = format_ident!("{}", kind.name);
    let doc = format!(
        "Registration of the `{name_str}` {}; `{name_str}::{}()` describes it.",
        kind.name, kind.name
    );
    let builder_doc = format!("The {}'s description, for {}.", kind.name, kind.used_by);
    let (spec_ty, registration) = (&kind.spec, &kind.registration);
    quote! {
        #item

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #vis struct #name {}

        #[automatically_derived]
        impl #name {
            #[doc = #builder_doc]
            pub fn #builder() -> #spec_ty {
                #spec
            }
        }

        ::rill::__private::inventory::submit! {
            #registration { build: #name::#builder }
        }
    }
}
