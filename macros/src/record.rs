//! `#[record]`: serde derives, a `rill::Record` impl and field accessors for a named struct.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::attr::{expected_one_of, parse_arg_list, path_name, set_once, unknown_argument};
use crate::ctxt::{Ctxt, with_errors};

const STRUCT_KEYS: &[&str] = &["codec"];
const FIELD_KEYS: &[&str] = &["key", "timestamp"];
const CODECS: &[&str] = &["json", "postcard"];

pub(crate) fn expand(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: syn::Item = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => return with_errors(input, e),
    };
    let mut strukt = match item {
        syn::Item::Struct(s) => s,
        syn::Item::Enum(e) => {
            let err = syn::Error::new_spanned(
                e.enum_token,
                "`#[record]` supports structs with named fields, not enums; wrap the enum in a struct field",
            );
            return with_errors(input, err);
        }
        other => {
            let err =
                syn::Error::new_spanned(&other, "`#[record]` goes on a struct with named fields");
            return with_errors(input, err);
        }
    };
    let mut cx = Ctxt::default();
    let codec = parse_args(&mut cx, args);
    if !strukt.generics.params.is_empty() {
        cx.error(
            &strukt.generics,
            "`#[record]` structs cannot be generic; records travel as one concrete type",
        );
    }
    let mut key: Option<(syn::Ident, syn::Type)> = None;
    let mut timestamp: Option<(syn::Ident, syn::Type)> = None;
    match &mut strukt.fields {
        syn::Fields::Named(fields) => {
            for field in &mut fields.named {
                let ident = field.ident.clone();
                let mut rill_attrs = Vec::new();
                field.attrs.retain(|a| {
                    let ours = a.path().is_ident("record");
                    if ours {
                        rill_attrs.push(a.clone());
                    }
                    !ours
                });
                for attr in rill_attrs {
                    let result = attr.parse_nested_meta(|meta| {
                        let Some(ident) = ident.clone() else { return Ok(()) };
                        let entry = (ident.clone(), field.ty.clone());
                        if meta.path.is_ident("key") {
                            if let Some((first, _)) = &key {
                                cx.error(&meta.path, format!("only one field can be `#[record(key)]`; `{first}` already is"));
                            } else {
                                key = Some(entry);
                            }
                        } else if meta.path.is_ident("timestamp") {
                            if let Some((first, _)) = &timestamp {
                                cx.error(&meta.path, format!("only one field can be `#[record(timestamp)]`; `{first}` already is"));
                            } else {
                                timestamp = Some(entry);
                            }
                        } else {
                            cx.error(
                                &meta.path,
                                format!("unknown `record` field argument `{}`; {}", path_name(&meta.path), expected_one_of(FIELD_KEYS)),
                            );
                        }
                        Ok(())
                    });
                    if let Err(e) = result {
                        cx.push(e);
                    }
                }
            }
        }
        syn::Fields::Unnamed(fields) => {
            cx.error(
                &*fields,
                "`#[record]` needs named fields (`struct S { a: T }`), not a tuple struct",
            );
        }
        syn::Fields::Unit => cx.error(
            &strukt.ident,
            "`#[record]` needs a struct with named fields, not a unit struct",
        ),
    }
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#strukt), e);
    }
    generate(&strukt, codec, key, timestamp)
}

fn parse_args(cx: &mut Ctxt, args: TokenStream) -> Option<syn::Ident> {
    let mut codec: Option<syn::Ident> = None;
    parse_arg_list(cx, args, |cx, meta| {
        if meta.path.is_ident("codec") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            let name = lit.value();
            if CODECS.contains(&name.as_str()) {
                let variant = match name.as_str() {
                    "postcard" => format_ident!("Postcard"),
                    _ => format_ident!("Json"),
                };
                set_once(cx, &mut codec, &meta, variant, "record");
            } else {
                cx.error(
                    &lit,
                    format!("unknown codec `{name}`; {}", expected_one_of(CODECS)),
                );
            }
        } else {
            unknown_argument(cx, &meta, "record", STRUCT_KEYS)?;
        }
        Ok(())
    });
    codec
}

fn generate(
    strukt: &syn::ItemStruct,
    codec: Option<syn::Ident>,
    key: Option<(syn::Ident, syn::Type)>,
    timestamp: Option<(syn::Ident, syn::Type)>,
) -> TokenStream {
    let name = &strukt.ident;
    let codec = codec.unwrap_or_else(|| format_ident!("Json"));
    let key_fn = key.map(|(field, ty)| {
        let call = quote_spanned! {ty.span()=>
            <#ty as ::rill::KeyBytes>::key_bytes(&self.#field)
        };
        let borrowed = quote_spanned! {ty.span()=>
            <#ty as ::rill::KeyBytes>::key_cow(&self.#field)
        };
        quote! {
            fn key(&self) -> ::core::option::Option<::std::vec::Vec<u8>> {
                ::core::option::Option::Some(#call)
            }
            fn key_ref(&self) -> ::core::option::Option<::std::borrow::Cow<'_, [u8]>> {
                ::core::option::Option::Some(#borrowed)
            }
        }
    });
    let time_fn = timestamp.map(|(field, ty)| {
        let call = quote_spanned! {ty.span()=>
            <#ty as ::rill::EventTime>::timestamp_millis(&self.#field)
        };
        quote! {
            fn event_time(&self) -> ::core::option::Option<i64> {
                ::core::option::Option::Some(#call)
            }
        }
    });
    let accessors = strukt.fields.iter().filter_map(|f| {
        let ident = f.ident.as_ref()?;
        let vis = &f.vis;
        let ty = &f.ty;
        let field_name = ident.unraw().to_string();
        let doc = format!("Accessor of the `{field_name}` field, usable as a key (`group_by`).");
        Some(quote! {
            #[doc = #doc]
            #vis const #ident: ::rill::Field<#name, #ty> = {
                fn __rill_get(record: &#name) -> &#ty {
                    &record.#ident
                }
                ::rill::Field::new(#field_name, __rill_get)
            };
        })
    });
    quote! {
        #[derive(::rill::__private::serde::Serialize, ::rill::__private::serde::Deserialize)]
        #[serde(crate = "::rill::__private::serde")]
        #strukt

        #[automatically_derived]
        impl ::rill::Record for #name {
            const CODEC: ::rill::Codec = ::rill::Codec::#codec;
            #key_fn
            #time_fn
        }

        #[automatically_derived]
        #[allow(non_upper_case_globals, dead_code)]
        impl #name {
            #(#accessors)*
        }
    }
}
