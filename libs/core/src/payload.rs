//! Conversions between protobuf `Struct`/`Value` (the wire) and
//! `serde_json::Value` (what the domains and stores speak).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number};

use keel_types::FieldError;

/// A protobuf `Struct` as a JSON object. Non-finite numbers are rejected,
/// because JSON cannot hold them.
pub fn struct_to_json(
    field: &str,
    value: &Struct,
) -> Result<Map<String, serde_json::Value>, FieldError> {
    let mut object = Map::new();
    for (key, item) in &value.fields {
        object.insert(key.clone(), value_to_json(&format!("{field}.{key}"), item)?);
    }
    Ok(object)
}

pub fn value_to_json(field: &str, value: &Value) -> Result<serde_json::Value, FieldError> {
    let json = match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => {
            let finite = Number::from_f64(*number)
                .ok_or_else(|| FieldError::new(field, "numbers must be finite"))?;
            // Whole numbers stay integers so `1` and `1.0` compare equal in filters.
            if number.fract() == 0.0 && number.abs() < 9.0e15 {
                serde_json::Value::Number(Number::from(*number as i64))
            } else {
                serde_json::Value::Number(finite)
            }
        }
        Some(Kind::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Kind::ListValue(list)) => {
            let mut items = Vec::with_capacity(list.values.len());
            for (index, item) in list.values.iter().enumerate() {
                items.push(value_to_json(&format!("{field}[{index}]"), item)?);
            }
            serde_json::Value::Array(items)
        }
        Some(Kind::StructValue(inner)) => serde_json::Value::Object(struct_to_json(field, inner)?),
    };
    Ok(json)
}

pub fn json_to_struct(object: &Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: object
            .iter()
            .map(|(key, item)| (key.clone(), json_to_value(item)))
            .collect(),
    }
}

pub fn json_to_value(value: &serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_integers() {
        let json =
            serde_json::json!({"lang": "en", "page": 3, "score": 0.5, "tags": ["a", true, null]});
        let object = json.as_object().unwrap();
        let back = struct_to_json("payload", &json_to_struct(object)).unwrap();
        assert_eq!(serde_json::Value::Object(back), json);
    }

    #[test]
    fn non_finite_numbers_name_the_field() {
        let wire = Struct {
            fields: [(
                "x".to_string(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let error = struct_to_json("payload", &wire).unwrap_err();
        assert_eq!(error.field, "payload.x");
    }
}
