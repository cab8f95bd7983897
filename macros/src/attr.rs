//! Argument parsing shared by the macros: `key = value` lists with unknown and repeated keys
//! reported against the list of valid ones.

use syn::meta::ParseNestedMeta;

use crate::ctxt::Ctxt;

/// `expected one of `a`, `b`, `c``
pub(crate) fn expected(keys: &[&str]) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!("expected one of {}", list.join(", "))
}

/// Records a key, reporting a repeat.
pub(crate) fn once<T>(
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

pub(crate) fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// A topic given by name (`"pageviews"`) or by a `Topic` constant (`PAGEVIEWS`).
pub(crate) enum TopicArg {
    Name(syn::LitStr),
    Const(syn::Path),
}

impl TopicArg {
    pub(crate) fn parse(meta: &ParseNestedMeta<'_>) -> syn::Result<Self> {
        let expr: syn::Expr = meta.value()?.parse()?;
        match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => {
                if s.value().trim().is_empty() {
                    return Err(syn::Error::new_spanned(s, "topic names cannot be empty"));
                }
                Ok(TopicArg::Name(s))
            }
            syn::Expr::Path(p) => Ok(TopicArg::Const(p.path)),
            other => Err(syn::Error::new_spanned(
                other,
                "expected a topic name (`\"pageviews\"`) or a `Topic` constant (`PAGEVIEWS`)",
            )),
        }
    }
}
