//! Argument parsing shared by the macros: `key = value` lists, with unknown and repeated keys
//! reported against the list of valid ones and parsing carried on past them, so that one compile
//! reports every mistake.

use proc_macro2::TokenStream;
use syn::meta::ParseNestedMeta;

use crate::ctxt::Ctxt;

/// Parses a macro's arguments (`#[agent(topic = "a", ...)]`) with `parse_arg`, one call per key.
/// An error `parse_arg` returns (a value it cannot parse) ends the list and is collected in `cx`.
pub(crate) fn parse_arg_list(
    cx: &mut Ctxt,
    tokens: TokenStream,
    mut parse_arg: impl FnMut(&mut Ctxt, ParseNestedMeta<'_>) -> syn::Result<()>,
) {
    let parser = syn::meta::parser(|meta| parse_arg(cx, meta));
    if let Err(e) = syn::parse::Parser::parse2(parser, tokens) {
        cx.push(e);
    }
}

/// Reports an unknown key of `what`'s arguments and skips its value, so the remaining arguments
/// are still checked.
pub(crate) fn unknown_argument(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    what: &str,
    keys: &[&str],
) -> syn::Result<()> {
    cx.error(
        &meta.path,
        format!(
            "unknown `{what}` argument `{}`; {}",
            path_name(&meta.path),
            expected_one_of(keys)
        ),
    );
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    }
    Ok(())
}

/// "expected one of `a`, `b`, `c`"
pub(crate) fn expected_one_of(keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!("expected one of {}", list.join(", "))
}

/// Records the value of a key of `what`'s arguments, reporting a repeat.
pub(crate) fn set_once<T>(
    cx: &mut Ctxt,
    slot: &mut Option<T>,
    meta: &ParseNestedMeta<'_>,
    value: T,
    what: &str,
) {
    if slot.is_some() {
        cx.error(
            &meta.path,
            format!("duplicate `{what}` argument `{}`", path_name(&meta.path)),
        );
    } else {
        *slot = Some(value);
    }
}

/// `a::b` as written, for messages.
pub(crate) fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// `key(binding = value, ...)` into `list`: one entry per parameter name, each name once.
/// `form` is the error for an entry that is not `binding = ...`, `noun` names a repeated one.
pub(crate) fn parse_bindings<T>(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    list: &mut Vec<(syn::Ident, T)>,
    form: &str,
    noun: &str,
    parse_value: fn(&ParseNestedMeta<'_>) -> syn::Result<T>,
) -> syn::Result<()> {
    meta.parse_nested_meta(|entry| {
        let Some(binding) = entry.path.get_ident().cloned() else {
            cx.error(&entry.path, form);
            return Ok(());
        };
        let value = parse_value(&entry)?;
        if list.iter().any(|(b, _)| *b == binding) {
            cx.error(&binding, format!("duplicate {noun} `{binding}`"));
        } else {
            list.push((binding, value));
        }
        Ok(())
    })
}

pub(crate) fn parse_str(meta: &ParseNestedMeta<'_>) -> syn::Result<syn::LitStr> {
    meta.value()?.parse()
}

/// A string that must be one of `choices` (`on_error = "retry"`), into `slot`; an error naming
/// `what` and the choices otherwise (`owner`: the macro, for a repeat).
pub(crate) fn parse_choice(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    slot: &mut Option<syn::LitStr>,
    choices: &[&str],
    what: &str,
    owner: &str,
) -> syn::Result<()> {
    let lit = parse_str(meta)?;
    if choices.contains(&lit.value().as_str()) {
        set_once(cx, slot, meta, lit, owner);
    } else {
        cx.error(
            &lit,
            format!(
                "unknown {what} `{}`; {}",
                lit.value(),
                expected_one_of(choices)
            ),
        );
    }
    Ok(())
}

/// `tables(binding = "table_name", ...)` of `#[timer]` and `#[page]`: which table each
/// `TableReader` parameter reads.
pub(crate) fn parse_table_bindings(
    cx: &mut Ctxt,
    meta: &ParseNestedMeta<'_>,
    tables: &mut Vec<(syn::Ident, syn::LitStr)>,
) -> syn::Result<()> {
    parse_bindings(
        cx,
        meta,
        tables,
        "expected `binding = \"table_name\"`",
        "table",
        parse_str,
    )
}

/// The table a `TableReader` parameter named `binding` reads: the one `tables(binding =
/// "name")` gives, else the table of the parameter's own name (timers and pages).
pub(crate) fn reader_table(
    tables: &[(syn::Ident, syn::LitStr)],
    binding: &syn::Ident,
) -> syn::LitStr {
    tables.iter().find(|(b, _)| b == binding).map_or_else(
        || syn::LitStr::new(&binding.to_string(), binding.span()),
        |(_, table)| table.clone(),
    )
}

/// Every binding of `tables(...)` names a parameter of `item`.
pub(crate) fn check_bindings_taken(
    cx: &mut Ctxt,
    item: &syn::ItemFn,
    tables: &[(syn::Ident, syn::LitStr)],
) {
    for (binding, _) in tables {
        let taken = item.sig.inputs.iter().any(|i| {
            matches!(i, syn::FnArg::Typed(t) if matches!(&*t.pat, syn::Pat::Ident(p) if p.ident == *binding))
        });
        if !taken {
            cx.error(
                binding,
                format!("no parameter `{binding}` takes this table"),
            );
        }
    }
}
