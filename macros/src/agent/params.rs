//! The agent function, parsed into [`AgentFn`]: its parameters classified by type into
//! [`Param`]s. Rules about the function alone are checked here (`async`, not generic, not a
//! method) and about each parameter alone (a type the runtime can supply, a plain name where the
//! arguments refer to it by name).

use crate::ctxt::Ctxt;

/// A parameter the runtime supplies when it runs the agent.
pub(super) enum Param {
    /// A `Stream<T>` parameter: `T`, and the binding name when it is a plain one.
    Stream(Option<syn::Ident>, syn::Type),
    /// A `Sink<U>` parameter: `U`.
    Sink(syn::Type),
    /// A `Table<K, V>` parameter: its binding name and whole type.
    Table(syn::Ident, syn::Type),
    /// A `GlobalTable<K, V>` parameter: its binding name and whole type.
    GlobalTable(syn::Ident, syn::Type),
    /// A `Requests` parameter: asks other agents.
    Requests,
}

/// The user's `async fn` and what its parameters are, in order.
pub(super) struct AgentFn<'a> {
    pub(super) item: &'a syn::ItemFn,
    pub(super) params: Vec<Param>,
}

impl<'a> AgentFn<'a> {
    /// Classifies the parameters, collecting every mistake in `cx`.
    pub(super) fn from_item(cx: &mut Ctxt, item: &'a syn::ItemFn) -> Self {
        if item.sig.asyncness.is_none() {
            cx.error(item.sig.fn_token, "`#[agent]` functions must be `async fn`");
        }
        if !item.sig.generics.params.is_empty() {
            cx.error(&item.sig.generics, "`#[agent]` functions cannot be generic");
        }
        let params = item
            .sig
            .inputs
            .iter()
            .filter_map(|input| param_of(cx, input))
            .collect();
        AgentFn { item, params }
    }

    pub(super) fn name(&self) -> &syn::Ident {
        &self.item.sig.ident
    }

    pub(super) fn stream_count(&self) -> usize {
        let streams = self
            .params
            .iter()
            .filter(|p| matches!(p, Param::Stream(..)));
        streams.count()
    }

    pub(super) fn sink_count(&self) -> usize {
        let sinks = self.params.iter().filter(|p| matches!(p, Param::Sink(_)));
        sinks.count()
    }

    /// The item type of the first `Stream<T>` parameter.
    pub(super) fn first_stream_type(&self) -> Option<&syn::Type> {
        self.params.iter().find_map(|p| match p {
            Param::Stream(_, ty) => Some(ty),
            _ => None,
        })
    }

    /// The item type of the `Sink<U>` parameter.
    pub(super) fn sink_type(&self) -> Option<&syn::Type> {
        self.params.iter().find_map(|p| match p {
            Param::Sink(ty) => Some(ty),
            _ => None,
        })
    }

    /// The item type of the `Stream<T>` parameter named `binding`.
    pub(super) fn stream_named(&self, binding: &syn::Ident) -> Option<&syn::Type> {
        self.params.iter().find_map(|p| match p {
            Param::Stream(Some(ident), ty) if ident == binding => Some(ty),
            _ => None,
        })
    }

    /// `V` of the `Table<K, V>` parameter named `binding` (`()` when there is none: `check`
    /// reports that).
    pub(super) fn table_value_type(&self, binding: &syn::Ident) -> proc_macro2::TokenStream {
        let ty = self.params.iter().find_map(|p| match p {
            Param::Table(ident, ty) if ident == binding => Some(ty),
            _ => None,
        });
        let value = ty.and_then(|ty| match ty {
            syn::Type::Path(p) => match &p.path.segments.last()?.arguments {
                syn::PathArguments::AngleBracketed(args) => args.args.iter().nth(1).cloned(),
                _ => None,
            },
            _ => None,
        });
        match value {
            Some(v) => quote::quote!(#v),
            None => quote::quote!(()),
        }
    }

    pub(super) fn has_table(&self, binding: &syn::Ident) -> bool {
        let mut tables = self.params.iter();
        tables.any(|p| matches!(p, Param::Table(ident, _) if ident == binding))
    }

    pub(super) fn has_global_table(&self, binding: &syn::Ident) -> bool {
        let mut tables = self.params.iter();
        tables.any(|p| matches!(p, Param::GlobalTable(ident, _) if ident == binding))
    }
}

/// What a parameter's type makes it, before its binding is looked at.
enum ParamType {
    Stream(syn::Type),
    Sink(syn::Type),
    Table,
    GlobalTable,
    Requests,
}

/// The parameter `input` is, or `None` after reporting why it cannot be one.
fn param_of(cx: &mut Ctxt, input: &syn::FnArg) -> Option<Param> {
    let typed = match input {
        syn::FnArg::Receiver(r) => {
            cx.error(r, "`#[agent]` functions are free functions, not methods");
            return None;
        }
        syn::FnArg::Typed(typed) => typed,
    };
    let binding = match &*typed.pat {
        syn::Pat::Ident(binding) => Some(binding.ident.clone()),
        _ => None,
    };
    match (param_type(&typed.ty), binding) {
        (Some(ParamType::Stream(ty)), binding) => Some(Param::Stream(binding, ty)),
        (Some(ParamType::Sink(ty)), _) => Some(Param::Sink(ty)),
        (Some(ParamType::Requests), _) => Some(Param::Requests),
        (Some(ParamType::Table), Some(binding)) => Some(Param::Table(binding, (*typed.ty).clone())),
        (Some(ParamType::Table), None) => {
            cx.error(
                &typed.pat,
                "a `Table` parameter needs a plain name, e.g. `totals: Table<String, u64>`",
            );
            None
        }
        (Some(ParamType::GlobalTable), Some(binding)) => {
            Some(Param::GlobalTable(binding, (*typed.ty).clone()))
        }
        (Some(ParamType::GlobalTable), None) => {
            cx.error(
                &typed.pat,
                "a `GlobalTable` parameter needs a plain name, e.g. `users: GlobalTable<String, User>`",
            );
            None
        }
        (None, _) => {
            cx.error(
                &typed.ty,
                "unsupported agent parameter; an agent takes a `Stream<T>`, optionally a `Sink<U>`, `Table<K, V>`s or `GlobalTable<K, V>`s, and `Requests`",
            );
            None
        }
    }
}

/// `Stream<T>`, `Sink<U>`, `Table<K, V>`, `GlobalTable<K, V>` by the last path segment (also
/// `rill::Stream<T>`), whose first generic argument must be a type.
fn param_type(ty: &syn::Type) -> Option<ParamType> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident == "Requests" && last.arguments.is_none() {
        return Some(ParamType::Requests);
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let syn::GenericArgument::Type(first) = args.args.first()? else {
        return None;
    };
    match (last.ident.to_string().as_str(), args.args.len()) {
        ("Stream", 1) => Some(ParamType::Stream(first.clone())),
        ("Sink", 1) => Some(ParamType::Sink(first.clone())),
        ("Table" | "SetTable", 2) => Some(ParamType::Table),
        ("GlobalTable", 2) => Some(ParamType::GlobalTable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::{AgentFn, Param};
    use crate::ctxt::Ctxt;

    #[test]
    fn parameters_are_classified_by_type_and_name() {
        let item: syn::ItemFn = parse_quote! {
            async fn f(
                mut views: rill::Stream<View>,
                (clicks): Stream<Click>,
                out: Sink<Out>,
                totals: Table<String, u64>,
                users: GlobalTable<String, User>,
            ) {}
        };
        let mut cx = Ctxt::default();
        let agent_fn = AgentFn::from_item(&mut cx, &item);
        assert!(cx.into_result().is_ok());
        let classified: Vec<String> = agent_fn
            .params
            .iter()
            .map(|p| match p {
                Param::Stream(Some(name), _) => format!("stream {name}"),
                Param::Stream(None, _) => "unnamed stream".to_owned(),
                Param::Sink(_) => "sink".to_owned(),
                Param::Table(name, _) => format!("table {name}"),
                Param::GlobalTable(name, _) => format!("global table {name}"),
                Param::Requests => "requests".to_owned(),
            })
            .collect();
        assert_eq!(
            classified,
            [
                "stream views",
                "unnamed stream",
                "sink",
                "table totals",
                "global table users"
            ]
        );
        assert_eq!(agent_fn.stream_count(), 2);
        assert!(agent_fn.has_table(&parse_quote!(totals)));
        assert!(!agent_fn.has_table(&parse_quote!(users)));
    }

    #[test]
    fn types_the_runtime_cannot_supply_are_rejected() {
        let item: syn::ItemFn = parse_quote! {
            async fn f(a: Stream<A, B>, b: &Stream<A>, c: Table<K>, d: Sink, e: u32) {}
        };
        let mut cx = Ctxt::default();
        let agent_fn = AgentFn::from_item(&mut cx, &item);
        assert!(agent_fn.params.is_empty());
        let errors = cx.into_result().err().map_or(0, |e| e.into_iter().count());
        assert_eq!(errors, 5);
    }
}
