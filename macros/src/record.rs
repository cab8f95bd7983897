//! `#[record]`: serde derives, a `rill::Record` impl and field accessors for a named struct.
//!
//! The struct is parsed into a [`RecordModel`] (its codec and the fields marked
//! `#[record(key)]` and `#[record(timestamp)]`, markers taken off the fields), every mistake
//! collected on the way; only a record with no errors is generated.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::attr::{expected_one_of, parse_arg_list, path_name, set_once, unknown_argument};
use crate::ctxt::{Ctxt, with_errors};

const RECORD_KEYS: &[&str] = &["codec", "schema", "key_codec"];
const FIELD_KEYS: &[&str] = &["key", "timestamp"];
const CODECS: &[&str] = &["json", "postcard", "avro", "json_schema", "protobuf"];

/// A field marked `#[record(key)]` or `#[record(timestamp)]`: its name and type.
type MarkedField = (syn::Ident, syn::Type);

/// What the record's impl is generated from.
struct RecordModel {
    /// The `rill::Codec` variant; `None` for the default.
    codec: Option<syn::Ident>,
    /// `schema = "schemas/x.avsc"`: the schema file, relative to the crate's manifest.
    schema_file: Option<syn::LitStr>,
    /// `key_codec = "avro"`: the key's `rill::schema_registry::SchemaType` variant, spanned
    /// on the argument.
    key_codec: Option<syn::Ident>,
    key: Option<MarkedField>,
    timestamp: Option<MarkedField>,
}

/// `#[record(args)] input`: the struct with its derives and impls, or as written with the errors.
pub(crate) fn expand_record(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut strukt = match named_struct(input.clone()) {
        Ok(strukt) => strukt,
        Err(err) => return with_errors(input, err),
    };
    let mut cx = Ctxt::default();
    let (codec, schema_file, key_codec) = parse_args(&mut cx, args);
    if !strukt.generics.params.is_empty() {
        cx.error(
            &strukt.generics,
            "`#[record]` structs cannot be generic; records travel as one concrete type",
        );
    }
    let mut model = RecordModel {
        codec,
        schema_file,
        key_codec,
        key: None,
        timestamp: None,
    };
    model.take_field_markers(&mut cx, &mut strukt);
    if let (Some(key_codec), None) = (&model.key_codec, &model.key) {
        cx.error(
            key_codec,
            "`key_codec` is how the record's key is written; mark its key field `#[record(key)]`",
        );
    }
    if let Err(e) = cx.into_result() {
        return with_errors(quote!(#strukt), e);
    }
    generate_record(&strukt, model)
}

/// The input as a struct; anything else is an error pointing at what it is.
fn named_struct(input: TokenStream) -> syn::Result<syn::ItemStruct> {
    match syn::parse2(input)? {
        syn::Item::Struct(strukt) => Ok(strukt),
        syn::Item::Enum(e) => Err(syn::Error::new_spanned(
            e.enum_token,
            "`#[record]` supports structs with named fields, not enums; wrap the enum in a struct field",
        )),
        other => Err(syn::Error::new_spanned(
            &other,
            "`#[record]` goes on a struct with named fields",
        )),
    }
}

/// `codec = "postcard"` into the `rill::Codec` variant's name, and `schema = "file"` (which
/// only a registry codec takes).
fn parse_args(
    cx: &mut Ctxt,
    args: TokenStream,
) -> (Option<syn::Ident>, Option<syn::LitStr>, Option<syn::Ident>) {
    let mut codec: Option<syn::Ident> = None;
    let mut schema: Option<syn::LitStr> = None;
    let mut key_codec: Option<syn::Ident> = None;
    parse_arg_list(cx, args, |cx, meta| {
        if meta.path.is_ident("schema") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            set_once(cx, &mut schema, &meta, lit, "record");
            return Ok(());
        }
        if meta.path.is_ident("key_codec") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            if let Some(variant) = key_codec_variant(cx, &lit) {
                set_once(cx, &mut key_codec, &meta, variant, "record");
            }
            return Ok(());
        }
        if !meta.path.is_ident("codec") {
            return unknown_argument(cx, &meta, "record", RECORD_KEYS);
        }
        let lit: syn::LitStr = meta.value()?.parse()?;
        let name = lit.value();
        if CODECS.contains(&name.as_str()) {
            let variant = match name.as_str() {
                "postcard" => format_ident!("Postcard", span = lit.span()),
                "avro" => format_ident!("Avro", span = lit.span()),
                "json_schema" => format_ident!("JsonSchema", span = lit.span()),
                "protobuf" => format_ident!("Protobuf", span = lit.span()),
                _ => format_ident!("Json", span = lit.span()),
            };
            set_once(cx, &mut codec, &meta, variant, "record");
        } else {
            cx.error(
                &lit,
                format!("unknown codec `{name}`; {}", expected_one_of(CODECS)),
            );
        }
        Ok(())
    });
    if let Some(file) = &schema
        && codec
            .as_ref()
            .is_none_or(|c| c != "Avro" && c != "JsonSchema" && c != "Protobuf")
    {
        cx.error(
            file,
            "`schema = \"...\"` is the schema of a registry codec; add `codec = \"avro\"` (or \"json_schema\", \"protobuf\")",
        );
    }
    if schema.is_none()
        && let Some(codec) = codec.as_ref().filter(|c| *c == "Protobuf")
    {
        cx.error(
            codec,
            "a protobuf record needs its .proto: `schema = \"schemas/x.proto\"` (the struct derives `prost::Message` to match it)",
        );
    }
    if let Some(key_codec) = &key_codec
        && codec
            .as_ref()
            .is_none_or(|c| c != "Avro" && c != "JsonSchema" && c != "Protobuf")
    {
        cx.error(
            key_codec,
            "registry-coded keys go with registry-coded values; add `codec = \"avro\"` (or \"json_schema\", \"protobuf\")",
        );
    }
    (codec, schema, key_codec)
}

/// `key_codec = "avro"` or `"json_schema"` into the `SchemaType` variant (Protobuf keys are
/// messages, which a key field is not).
fn key_codec_variant(cx: &mut Ctxt, lit: &syn::LitStr) -> Option<syn::Ident> {
    match lit.value().as_str() {
        "avro" => Some(format_ident!("Avro", span = lit.span())),
        "json_schema" => Some(format_ident!("Json", span = lit.span())),
        name => {
            cx.error(
                lit,
                format!("`{name}` cannot write a record key; expected \"avro\" or \"json_schema\" (Protobuf keys are messages)"),
            );
            None
        }
    }
}

impl RecordModel {
    /// Removes the `#[record(...)]` attributes from the fields, noting the key and timestamp
    /// fields they mark.
    fn take_field_markers(&mut self, cx: &mut Ctxt, strukt: &mut syn::ItemStruct) {
        match &mut strukt.fields {
            syn::Fields::Named(fields) => {
                for field in &mut fields.named {
                    self.take_markers_of(cx, field);
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
    }

    /// One field's `#[record(key)]` / `#[record(timestamp)]`, taken off it; a second field
    /// with the same marker is an error.
    fn take_markers_of(&mut self, cx: &mut Ctxt, field: &mut syn::Field) {
        let Some(ident) = field.ident.clone() else {
            return;
        };
        let mut markers = Vec::new();
        field.attrs.retain(|a| {
            let ours = a.path().is_ident("record");
            if ours {
                markers.push(a.clone());
            }
            !ours
        });
        for attr in markers {
            let result = attr.parse_nested_meta(|meta| {
                let marked = (ident.clone(), field.ty.clone());
                if meta.path.is_ident("key") {
                    mark_once(cx, &mut self.key, &meta.path, marked, "key");
                } else if meta.path.is_ident("timestamp") {
                    mark_once(cx, &mut self.timestamp, &meta.path, marked, "timestamp");
                } else {
                    cx.error(
                        &meta.path,
                        format!(
                            "unknown `record` field argument `{}`; {}",
                            path_name(&meta.path),
                            expected_one_of(FIELD_KEYS)
                        ),
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

fn mark_once(
    cx: &mut Ctxt,
    slot: &mut Option<MarkedField>,
    marker: &syn::Path,
    field: MarkedField,
    what: &str,
) {
    if let Some((first, _)) = slot {
        cx.error(
            marker,
            format!("only one field can be `#[record({what})]`; `{first}` already is"),
        );
    } else {
        *slot = Some(field);
    }
}

fn generate_record(strukt: &syn::ItemStruct, model: RecordModel) -> TokenStream {
    let name = &strukt.ident;
    let codec = model.codec.unwrap_or_else(|| format_ident!("Json"));
    let key_schema_fn = model
        .key_codec
        .as_ref()
        .zip(model.key.as_ref())
        .map(|(codec, (_, ty))| key_schema_method(codec, ty));
    let key_fn = model.key.map(key_methods);
    let time_fn = model.timestamp.map(event_time_method);
    let accessors = field_accessors(strukt);
    let (schema_fn, schema_impl) = if codec == "Protobuf" {
        (
            protobuf_methods(strukt, model.schema_file.as_ref()),
            TokenStream::new(),
        )
    } else if codec == "Avro" || codec == "JsonSchema" {
        registry_schema(strukt, model.schema_file.as_ref(), codec == "Avro")
    } else {
        (TokenStream::new(), TokenStream::new())
    };
    quote! {
        #[derive(::rill::__private::serde::Serialize, ::rill::__private::serde::Deserialize)]
        #[serde(crate = "::rill::__private::serde")]
        #strukt

        #[automatically_derived]
        impl ::rill::Record for #name {
            const CODEC: ::rill::Codec = ::rill::Codec::#codec;
            #key_fn
            #key_schema_fn
            #time_fn
            #schema_fn
        }

        #schema_impl

        #[automatically_derived]
        #[allow(non_upper_case_globals, dead_code)]
        impl #name {
            #(#accessors)*
        }
    }
}

/// A registry record's `Record::registry_schema` and, without a schema file, the derived
/// `AvroSchema` impl it is built from (a JSON Schema is derived from the Avro one).
fn registry_schema(
    strukt: &syn::ItemStruct,
    file: Option<&syn::LitStr>,
    avro: bool,
) -> (TokenStream, TokenStream) {
    let name = &strukt.ident;
    let (text, schema_impl) = match file {
        Some(file) => (
            quote!(::core::include_str!(
                ::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #file)
            )),
            TokenStream::new(),
        ),
        None => (
            quote!(<#name as ::rill::schema_registry::AvroSchema>::avro_schema_json()),
            crate::avro::expand_avro_schema(quote!(#strukt)),
        ),
    };
    let make = match (avro, file.is_some()) {
        (true, _) => quote!(::rill::schema_registry::RecordSchema::avro),
        (false, true) => quote!(::rill::schema_registry::RecordSchema::json),
        (false, false) => quote!(::rill::schema_registry::RecordSchema::json_of_avro),
    };
    let schema_fn = quote! {
        fn registry_schema() -> ::core::option::Option<&'static ::rill::schema_registry::RecordSchema> {
            static SCHEMA: ::std::sync::OnceLock<::rill::schema_registry::RecordSchema> =
                ::std::sync::OnceLock::new();
            ::core::option::Option::Some(SCHEMA.get_or_init(|| {
                #make(::core::any::type_name::<#name>(), ::core::convert::AsRef::<str>::as_ref(&#text))
            }))
        }
    };
    (schema_fn, schema_impl)
}

/// A Protocol Buffers record's `Record::registry_schema` (its `.proto`) and its message
/// encoding through the struct's `prost::Message` impl.
fn protobuf_methods(strukt: &syn::ItemStruct, file: Option<&syn::LitStr>) -> TokenStream {
    let name = &strukt.ident;
    let Some(file) = file else {
        return TokenStream::new();
    };
    let message = quote_spanned! {name.span()=> ::rill::__private::prost::Message };
    quote! {
        fn registry_schema() -> ::core::option::Option<&'static ::rill::schema_registry::RecordSchema> {
            static SCHEMA: ::std::sync::OnceLock<::rill::schema_registry::RecordSchema> =
                ::std::sync::OnceLock::new();
            ::core::option::Option::Some(SCHEMA.get_or_init(|| {
                ::rill::schema_registry::RecordSchema::protobuf(
                    ::core::any::type_name::<#name>(),
                    ::core::include_str!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/", #file)),
                )
            }))
        }
        fn encode_message(&self, out: &mut ::std::vec::Vec<u8>) -> ::core::result::Result<(), ::rill::CodecError> {
            <Self as #message>::encode(self, out)
                .map_err(|e| ::rill::CodecError::Protobuf(e.to_string()))
        }
        fn decode_message(bytes: &[u8]) -> ::core::result::Result<Self, ::rill::CodecError> {
            <Self as #message>::decode(bytes)
                .map_err(|e| ::rill::CodecError::Protobuf(e.to_string()))
        }
    }
}

/// `Record::key` and `key_ref` from the key field, spanned on its type so a type that is not
/// `KeyBytes` is reported there.
fn key_methods((field, ty): MarkedField) -> TokenStream {
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
}

/// `Record::key_schema` from `key_codec` and the key field's type, spanned on the type so a
/// type that cannot be a registry key is reported there.
fn key_schema_method(codec: &syn::Ident, ty: &syn::Type) -> TokenStream {
    let kind = quote_spanned! {ty.span()=>
        <#ty as ::rill::schema_registry::RegistryKey>::KIND
    };
    quote! {
        fn key_schema() -> ::core::option::Option<::rill::schema_registry::KeySchema> {
            ::core::option::Option::Some(::rill::schema_registry::KeySchema::new(
                ::rill::schema_registry::SchemaType::#codec,
                #kind,
            ))
        }
    }
}

/// `Record::event_time` from the timestamp field, spanned on its type like [`key_methods`].
fn event_time_method((field, ty): MarkedField) -> TokenStream {
    let call = quote_spanned! {ty.span()=>
        <#ty as ::rill::EventTime>::timestamp_millis(&self.#field)
    };
    quote! {
        fn event_time(&self) -> ::core::option::Option<i64> {
            ::core::option::Option::Some(#call)
        }
    }
}

/// A `rill::Field` constant per field (`PageView::url`), usable as a key.
fn field_accessors(strukt: &syn::ItemStruct) -> Vec<TokenStream> {
    let name = &strukt.ident;
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
    accessors.collect()
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::expand_record;
    use crate::ctxt::compile_error_messages;

    #[test]
    fn field_markers_are_taken_off_the_struct() {
        let out = expand_record(
            quote!(codec = "postcard"),
            quote!(
                pub struct View {
                    #[record(key)]
                    #[serde(rename = "user")]
                    pub user_id: String,
                    #[record(timestamp)]
                    pub at: f64,
                }
            ),
        );
        let file: syn::File = syn::parse2(out).expect("the expansion is valid Rust");
        let Some(syn::Item::Struct(view)) = file.items.first() else {
            panic!("the struct comes first");
        };
        let field_attrs: Vec<String> = view
            .fields
            .iter()
            .flat_map(|f| &f.attrs)
            .map(|a| quote!(#a).to_string())
            .collect();
        assert_eq!(field_attrs, ["# [serde (rename = \"user\")]"]);
    }

    #[test]
    fn a_second_key_field_is_an_error_naming_the_first() {
        let out = expand_record(
            quote!(),
            quote!(
                struct S {
                    #[record(key)]
                    a: String,
                    #[record(key)]
                    b: String,
                }
            ),
        );
        assert_eq!(
            compile_error_messages(out),
            ["only one field can be `#[record(key)]`; `a` already is"]
        );
    }
}
