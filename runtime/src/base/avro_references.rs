//! Schema references (Confluent's `references`: an Avro schema using a named type registered
//! under another subject) made self-contained: each referenced named type is written out
//! where it is first used, as Avro allows, so one schema text parses, caches and resolves like
//! any other. Where a later use names it again, the name stays a name.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::base::error::CodecError;

/// `schema` (Avro JSON text) with the named types of `referenced` (the referenced schemas'
/// texts, each a record, enum or fixed, in any order; they may use one another) written out at
/// their first use. A referenced type `schema` does not use is left out.
pub(crate) fn inline(schema: &str, referenced: &[String]) -> Result<String, CodecError> {
    let parse = |text: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| CodecError::Avro(format!("a referenced schema is not JSON: {e}")))
    };
    let mut named = HashMap::new();
    for text in referenced {
        let value = parse(text)?;
        let name = full_name(&value, "").ok_or_else(|| {
            CodecError::Avro(format!(
                "a referenced schema is not a named type (record, enum or fixed): {text}"
            ))
        })?;
        named.insert(name, value);
    }
    let mut inliner = Inliner {
        named,
        defined: HashSet::new(),
    };
    Ok(inliner.at_type(parse(schema)?, "").to_string())
}

struct Inliner {
    /// Referenced named types by full name.
    named: HashMap<String, Value>,
    /// Full names written out so far (later uses stay names).
    defined: HashSet<String>,
}

impl Inliner {
    /// The schema in a type position, under the enclosing namespace `namespace`.
    fn at_type(&mut self, schema: Value, namespace: &str) -> Value {
        match schema {
            Value::String(name) => {
                let full = qualified(&name, namespace);
                match self.named.get(&full) {
                    Some(found) if self.defined.insert(full.clone()) => {
                        let found = found.clone();
                        self.at_type(found, namespace)
                    }
                    _ => Value::String(name),
                }
            }
            Value::Array(branches) => Value::Array(
                branches
                    .into_iter()
                    .map(|b| self.at_type(b, namespace))
                    .collect(),
            ),
            Value::Object(object) => Value::Object(self.in_object(object, namespace)),
            other => other,
        }
    }

    /// A schema object: a named type (its name defined, its fields walked in its namespace),
    /// an array or map (its items or values walked), or `{"type": ..}` around another type.
    fn in_object(
        &mut self,
        mut object: serde_json::Map<String, Value>,
        namespace: &str,
    ) -> serde_json::Map<String, Value> {
        let value = Value::Object(object.clone());
        let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
        let inner = match kind {
            "record" | "error" | "enum" | "fixed" => {
                let full = full_name(&value, namespace).unwrap_or_default();
                self.defined.insert(full.clone());
                full.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned()
            }
            _ => namespace.to_owned(),
        };
        match kind {
            "record" | "error" => {
                if let Some(Value::Array(fields)) = object.get_mut("fields") {
                    for field in fields.iter_mut() {
                        if let Some(ty) = field.get_mut("type") {
                            *ty = self.at_type(ty.take(), &inner);
                        }
                    }
                }
            }
            "array" => self.walk_key(&mut object, "items", &inner),
            "map" => self.walk_key(&mut object, "values", &inner),
            "enum" | "fixed" => {}
            // `{"type": "com.acme.Address"}`, `{"type": {..}}`, a primitive with attributes.
            _ => self.walk_key(&mut object, "type", &inner),
        }
        object
    }

    fn walk_key(&mut self, object: &mut serde_json::Map<String, Value>, key: &str, ns: &str) {
        if let Some(inner) = object.get_mut(key) {
            *inner = self.at_type(inner.take(), ns);
        }
    }
}

/// A named type's full name: its dotted name, else its namespace (or the enclosing one) and
/// name.
fn full_name(schema: &Value, namespace: &str) -> Option<String> {
    let name = schema.get("name")?.as_str()?;
    if name.contains('.') {
        return Some(name.to_owned());
    }
    let ns = schema
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(namespace);
    Some(qualified(name, ns))
}

/// `name` in `namespace` (a dotted name is already full; primitives stay as they are).
fn qualified(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTRY: &str =
        r#"{"type":"enum","name":"Country","namespace":"geo","symbols":["NL","FR"]}"#;
    const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"geo","fields":[{"name":"city","type":"string"},{"name":"country","type":"Country"}]}"#;
    const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"crm","fields":[
        {"name":"id","type":"long"},
        {"name":"home","type":"geo.Address"},
        {"name":"work","type":["null","geo.Address"],"default":null},
        {"name":"past","type":{"type":"array","items":"geo.Address"}}]}"#;

    #[test]
    fn referenced_types_are_written_out_at_first_use_and_named_after() {
        let inlined = inline(CUSTOMER, &[ADDRESS.to_owned(), COUNTRY.to_owned()]).unwrap();
        let value: Value = serde_json::from_str(&inlined).unwrap();
        let fields = &value["fields"];
        assert_eq!(fields[1]["type"]["name"], "Address");
        // Address's own reference, resolved in Address's namespace.
        assert_eq!(fields[1]["type"]["fields"][1]["type"]["name"], "Country");
        assert_eq!(fields[2]["type"][1], "geo.Address");
        assert_eq!(fields[3]["type"]["items"], "geo.Address");
        // The result is one schema apache-avro parses on its own.
        let schema = crate::base::avro::parse(&inlined).unwrap();
        assert!(
            schema
                .canonical_form()
                .contains("\"symbols\":[\"NL\",\"FR\"]")
        );
    }

    #[test]
    fn a_schema_without_references_is_unchanged_and_a_bad_reference_is_an_error() {
        let plain = r#"{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}"#;
        let same: Value = serde_json::from_str(&inline(plain, &[]).unwrap()).unwrap();
        assert_eq!(same, serde_json::from_str::<Value>(plain).unwrap());
        assert!(inline(plain, &["\"string\"".to_owned()]).is_err());
        assert!(inline(plain, &["{".to_owned()]).is_err());
    }
}
