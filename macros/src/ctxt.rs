//! Error collection: every mistake found is reported, each at its own span, in one compile.
//! (serde_derive's `Ctxt`.) A macro parses and checks everything into one [`Ctxt`], then
//! either generates or returns the user's item unchanged with all the errors ([`with_errors`]).

use proc_macro2::TokenStream;
use quote::ToTokens;

/// The errors found so far, combined in the order they were found.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Option<syn::Error>,
}

impl Ctxt {
    /// An error spanning `tokens` (their first token on stable Rust).
    pub(crate) fn error(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at `span`, for places with no tokens to point at (e.g. the call site).
    pub(crate) fn error_at(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// An error syn returned, e.g. a value of the wrong kind.
    pub(crate) fn push(&mut self, err: syn::Error) {
        match &mut self.errors {
            Some(all) => all.combine(err),
            None => self.errors = Some(err),
        }
    }

    /// `Err(errors)` if any were found.
    pub(crate) fn into_result(self) -> syn::Result<()> {
        self.errors.map_or(Ok(()), Err)
    }
}

/// The item as written plus the errors, so IDEs keep working on the rest of the code.
pub(crate) fn with_errors(item: TokenStream, err: syn::Error) -> TokenStream {
    let mut out = item;
    out.extend(err.into_compile_error());
    out
}

/// The messages of the `compile_error!`s in a macro's output, in order.
#[cfg(test)]
pub(crate) fn compile_error_messages(output: TokenStream) -> Vec<String> {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = output.into_iter().collect();
    let messages = tokens.windows(3).filter_map(|window| match window {
        [
            TokenTree::Ident(name),
            TokenTree::Punct(bang),
            TokenTree::Group(body),
        ] if name == "compile_error" && bang.as_char() == '!' => {
            syn::parse2::<syn::LitStr>(body.stream()).ok()
        }
        _ => None,
    });
    messages.map(|lit| lit.value()).collect()
}
