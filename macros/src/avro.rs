//! `#[derive(AvroSchema)]`: a struct's Avro record schema, built from its fields' types through
//! the public `rill::schema_registry::AvroSchema` trait (each field's type supplies its own
//! schema, so an unsupported type is a compile error at that field). serde's `rename` and
//! `skip` on fields are followed, since the schema must match what serde writes.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::ctxt::{Ctxt, with_errors};

/// The derive's output: the impl, or the errors.
pub(crate) fn expand_avro_schema(input: TokenStream) -> TokenStream {
    let item: syn::DeriveInput = match syn::parse2(input) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let mut cx = Ctxt::default();
    let fields = fields_of(&mut cx, &item);
    if let Err(e) = cx.into_result() {
        return with_errors(TokenStream::new(), e);
    }
    let name = &item.ident;
    let name_str = name.unraw().to_string();
    quote! {
        #[automatically_derived]
        impl ::rill::schema_registry::AvroSchema for #name {
            fn avro_type(
                __rill_named: &mut ::std::collections::HashSet<::std::string::String>,
            ) -> ::rill::__private::serde_json::Value {
                ::rill::schema_registry::avro::record_type(
                    __rill_named,
                    ::core::module_path!(),
                    #name_str,
                    |__rill_named| ::std::vec![#(#fields),*],
                )
            }
        }
    }
}

/// Each field's schema entry, in order; errors for what cannot be a record.
fn fields_of(cx: &mut Ctxt, item: &syn::DeriveInput) -> Vec<TokenStream> {
    if !item.generics.params.is_empty() {
        cx.error(&item.generics, "`AvroSchema` structs cannot be generic");
    }
    let syn::Data::Struct(data) = &item.data else {
        cx.error(
            &item.ident,
            "`#[derive(AvroSchema)]` goes on a struct with named fields (Avro records); enums are not supported yet",
        );
        return Vec::new();
    };
    let syn::Fields::Named(named) = &data.fields else {
        cx.error(&data.fields, "an Avro record needs named fields");
        return Vec::new();
    };
    let mut out = Vec::new();
    for field in &named.named {
        let Some(ident) = &field.ident else { continue };
        let Some(field_name) = serde_name(cx, field, ident) else {
            continue;
        };
        let ty = &field.ty;
        let default = is_option(ty)
            .then(|| quote!(__rill_field["default"] = ::rill::__private::serde_json::Value::Null;));
        // Spanned on the type, so a type without a schema is reported at the field.
        out.push(quote_spanned! {ty.span()=> {
            let mut __rill_field = ::rill::__private::serde_json::json!({
                "name": #field_name,
                "type": <#ty as ::rill::schema_registry::AvroSchema>::avro_type(__rill_named),
            });
            #default
            __rill_field
        }});
    }
    out
}

/// The field's name as serde writes it (`#[serde(rename = "..")]`), or `None` for a field
/// serde skips.
fn serde_name(cx: &mut Ctxt, field: &syn::Field, ident: &syn::Ident) -> Option<String> {
    let mut name = ident.unraw().to_string();
    let mut skipped = false;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                name = lit.value();
            } else if meta.path.is_ident("skip") || meta.path.is_ident("skip_serializing") {
                skipped = true;
            } else if meta.path.is_ident("flatten") {
                cx.error(&meta.path, "`#[serde(flatten)]` fields have no Avro record schema; nest the record instead");
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        });
        if let Err(e) = parsed {
            cx.push(e);
        }
    }
    (!skipped).then_some(name)
}

fn is_option(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p)
        if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}
