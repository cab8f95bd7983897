//! `#[page("/path")]`: keeps the user's async axum handler and adds a registration whose
//! `page()` builds a `rill::PageSpec`: a router with the handler on the path, its
//! `TableReader<K, V>` parameters opened from the worker's tables when the page is built, every
//! other parameter passed through as an axum extractor.

use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::meta::ParseNestedMeta;

use crate::attr::{
    check_bindings_taken, parse_arg_list, parse_choice, parse_table_bindings, reader_table,
    unknown_argument,
};
use crate::ctxt::{Ctxt, with_errors};

const PAGE_KEYS: &[&str] = &["method", "tables"];
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// What the attribute says.
#[derive(Default)]
struct PageArgs {
    path: Option<syn::LitStr>,
    method: Option<syn::LitStr>,
    tables: Vec<(syn::Ident, syn::LitStr)>,
}

/// A handler parameter: a table reader the page opens, or an extractor axum fills.
enum PageParam {
    /// The table's name and the parameter's type.
    Reader(syn::LitStr, syn::Type),
    Extractor(syn::Type),
}

/// `#[page(args)]` on `input`.
pub(crate) fn expand_page(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: syn::ItemFn = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(_) => {
            let err = syn::Error::new_spanned(&input, "`#[page]` goes on an `async fn`");
            return with_errors(input, err);
        }
    };
    let mut cx = Ctxt::default();
    let args = PageArgs::from_tokens(&mut cx, args);
    let params = params_of(&mut cx, &item, &args);
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#item), e);
    }
    generate(&item, &args, &params)
}

impl PageArgs {
    fn from_tokens(cx: &mut Ctxt, tokens: TokenStream) -> Self {
        let mut args = PageArgs::default();
        let mut iter = tokens.into_iter().peekable();
        if let Some(TokenTree::Literal(lit)) = iter.peek()
            && let syn::Lit::Str(path) = syn::Lit::new(lit.clone())
        {
            iter.next();
            if !path.value().starts_with('/') {
                cx.error(
                    &path,
                    "a page's path starts with `/`, e.g. \"/count/{url}\"",
                );
            }
            args.path = Some(path);
            if let Some(TokenTree::Punct(p)) = iter.peek()
                && p.as_char() == ','
            {
                iter.next();
            }
        }
        let rest: TokenStream = iter.collect();
        parse_arg_list(cx, rest, |cx, meta| args.parse_arg(cx, &meta));
        if args.path.is_none() {
            cx.error_at(
                proc_macro2::Span::call_site(),
                "missing the path: `#[page(\"/count/{url}\")]`",
            );
        }
        args
    }

    fn parse_arg(&mut self, cx: &mut Ctxt, meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
        match meta.path.get_ident().map(ToString::to_string).as_deref() {
            Some("method") => {
                parse_choice(cx, meta, &mut self.method, METHODS, "HTTP method", "page")?;
            }
            Some("tables") => parse_table_bindings(cx, meta, &mut self.tables)?,
            _ => unknown_argument(cx, meta, "page", PAGE_KEYS)?,
        }
        Ok(())
    }
}

/// The parameters: `TableReader<K, V>`s (by name, or `tables(binding = "name")`) and
/// extractors.
fn params_of(cx: &mut Ctxt, item: &syn::ItemFn, args: &PageArgs) -> Vec<PageParam> {
    if item.sig.asyncness.is_none() {
        cx.error(item.sig.fn_token, "`#[page]` functions must be `async fn`");
    }
    if !item.sig.generics.params.is_empty() {
        cx.error(&item.sig.generics, "`#[page]` functions cannot be generic");
    }
    let mut params = Vec::new();
    for input in &item.sig.inputs {
        let syn::FnArg::Typed(typed) = input else {
            cx.error(input, "`#[page]` functions cannot be methods");
            continue;
        };
        let is_reader = matches!(&*typed.ty, syn::Type::Path(p)
            if p.path.segments.last().is_some_and(|s| s.ident == "TableReader"));
        if !is_reader {
            params.push(PageParam::Extractor((*typed.ty).clone()));
            continue;
        }
        let syn::Pat::Ident(binding) = &*typed.pat else {
            cx.error(
                &typed.pat,
                "a `TableReader` parameter needs a plain name (the table's, or one bound in `tables(...)`)",
            );
            continue;
        };
        let table = reader_table(&args.tables, &binding.ident);
        params.push(PageParam::Reader(table, (*typed.ty).clone()));
    }
    check_bindings_taken(cx, item, &args.tables);
    params
}

fn generate(item: &syn::ItemFn, args: &PageArgs, params: &[PageParam]) -> TokenStream {
    let name = &item.sig.ident;
    let name_str = name.to_string();
    let path = args.path.as_ref().expect("checked");
    let method = format_ident!(
        "{}",
        args.method
            .as_ref()
            .map_or_else(|| "get".to_owned(), syn::LitStr::value)
    );
    let var = |i: usize| format_ident!("__rill_arg{i}");
    // Readers are opened when the page is built; the handler clones them per request.
    let opens = params.iter().enumerate().filter_map(|(i, p)| match p {
        PageParam::Reader(table, ty) => {
            let v = var(i);
            Some(quote_spanned!(table.span()=> let #v: #ty = __rill_tables.reader(#table)?;))
        }
        PageParam::Extractor(_) => None,
    });
    let extractors = params.iter().enumerate().filter_map(|(i, p)| match p {
        PageParam::Extractor(ty) => {
            let v = var(i);
            Some(quote!(#v: #ty))
        }
        PageParam::Reader(..) => None,
    });
    let clones = params.iter().enumerate().filter_map(|(i, p)| match p {
        PageParam::Reader(..) => {
            let v = var(i);
            Some(quote!(let #v = #v.clone();))
        }
        PageParam::Extractor(_) => None,
    });
    let call_args = (0..params.len()).map(var);
    let kind = crate::registration::Kind {
        name: "page",
        spec: quote!(::rill::PageSpec),
        registration: quote!(::rill::PageRegistration),
        used_by: "`App::pages` and the worker's web server",
    };
    let spec = quote! {
        ::rill::PageSpec::new(#name_str, #path, |__rill_tables: &::rill::Tables| {
            #(#opens)*
            let __rill_handler = move |#(#extractors),*| {
                #(#clones)*
                async move { #name(#(#call_args),*).await }
            };
            ::core::result::Result::Ok(
                ::rill::axum::Router::new().route(#path, ::rill::axum::routing::#method(__rill_handler)),
            )
        })
    };
    crate::registration::register(item, &kind, &spec)
}
