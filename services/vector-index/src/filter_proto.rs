//! The wire form of a payload filter (`keel.v1.Filter`), checked and turned
//! into a [`PayloadFilter`]; every refusal names the field and the rule.

use keel_core::payload::value_to_json;
use keel_proto::v1 as pb;
use keel_types::FieldError;

use crate::filter::{Condition, NumericRange, PayloadFilter, Predicate};

pub const MAX_CONDITIONS: usize = 64;
pub const MAX_DEPTH: usize = 4;
pub const MAX_ANY_OF_VALUES: usize = 1024;
pub const MAX_KEY_CHARS: usize = 256;

/// `field` names the filter in the request (`filter`).
pub fn filter_from_proto(field: &str, filter: &pb::Filter) -> Result<PayloadFilter, FieldError> {
    let mut conditions_seen = 0;
    convert_filter(field, filter, 1, &mut conditions_seen)
}

fn convert_filter(
    field: &str,
    filter: &pb::Filter,
    depth: usize,
    conditions_seen: &mut usize,
) -> Result<PayloadFilter, FieldError> {
    if depth > MAX_DEPTH {
        return Err(FieldError::new(
            field,
            format!("filters may nest at most {MAX_DEPTH} deep"),
        ));
    }
    let mut convert_all = |part: &str, conditions: &[pb::Condition]| {
        conditions
            .iter()
            .enumerate()
            .map(|(position, condition)| {
                *conditions_seen += 1;
                if *conditions_seen > MAX_CONDITIONS {
                    return Err(FieldError::new(
                        field,
                        format!("must hold at most {MAX_CONDITIONS} conditions in all"),
                    ));
                }
                let field = format!("{field}.{part}[{position}]");
                convert_condition(&field, condition, depth, conditions_seen)
            })
            .collect::<Result<Vec<Condition>, FieldError>>()
    };
    Ok(PayloadFilter {
        must: convert_all("must", &filter.must)?,
        should: convert_all("should", &filter.should)?,
        must_not: convert_all("must_not", &filter.must_not)?,
    })
}

fn convert_condition(
    field: &str,
    condition: &pb::Condition,
    depth: usize,
    conditions_seen: &mut usize,
) -> Result<Condition, FieldError> {
    match &condition.condition {
        None => Err(FieldError::new(
            field,
            "must set one of `field` or `filter`",
        )),
        Some(pb::condition::Condition::Filter(nested)) => Ok(Condition::Nested(convert_filter(
            &format!("{field}.filter"),
            nested,
            depth + 1,
            conditions_seen,
        )?)),
        Some(pb::condition::Condition::Field(field_condition)) => {
            convert_field(&format!("{field}.field"), field_condition)
        }
    }
}

fn convert_field(field: &str, condition: &pb::FieldCondition) -> Result<Condition, FieldError> {
    let key_chars = condition.key.chars().count();
    if key_chars == 0 || key_chars > MAX_KEY_CHARS {
        return Err(FieldError::new(
            format!("{field}.key"),
            format!("must be 1..={MAX_KEY_CHARS} characters, got {key_chars}"),
        ));
    }
    use pb::field_condition::Predicate as Wire;
    let predicate = match &condition.predicate {
        None => {
            return Err(FieldError::new(
                field,
                "must set one of `equals`, `any_of` or `range`",
            ))
        }
        Some(Wire::Equals(value)) => {
            Predicate::Equals(value_to_json(&format!("{field}.equals"), value)?)
        }
        Some(Wire::AnyOf(list)) => {
            let any_of_field = format!("{field}.any_of");
            if list.values.is_empty() || list.values.len() > MAX_ANY_OF_VALUES {
                return Err(FieldError::new(
                    any_of_field,
                    format!(
                        "must hold 1..={MAX_ANY_OF_VALUES} values, got {}",
                        list.values.len()
                    ),
                ));
            }
            let values = list
                .values
                .iter()
                .enumerate()
                .map(|(position, value)| {
                    value_to_json(&format!("{any_of_field}[{position}]"), value)
                })
                .collect::<Result<Vec<_>, FieldError>>()?;
            Predicate::AnyOf(values)
        }
        Some(Wire::Range(range)) => {
            Predicate::Range(convert_range(&format!("{field}.range"), range)?)
        }
    };
    Ok(Condition::Field {
        key: condition.key.clone(),
        predicate,
    })
}

fn convert_range(field: &str, range: &pb::Range) -> Result<NumericRange, FieldError> {
    let bounds = [
        ("gt", range.gt),
        ("gte", range.gte),
        ("lt", range.lt),
        ("lte", range.lte),
    ];
    if bounds.iter().all(|(_, bound)| bound.is_none()) {
        return Err(FieldError::new(
            field,
            "must set at least one of `gt`, `gte`, `lt`, `lte`",
        ));
    }
    for (name, bound) in bounds {
        if let Some(value) = bound.filter(|value| !value.is_finite()) {
            return Err(FieldError::new(
                format!("{field}.{name}"),
                format!("must be finite, got {value}"),
            ));
        }
    }
    Ok(NumericRange {
        gt: range.gt,
        gte: range.gte,
        lt: range.lt,
        lte: range.lte,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::payload::json_to_value;
    use serde_json::json;

    fn field_condition(key: &str, predicate: pb::field_condition::Predicate) -> pb::Condition {
        pb::Condition {
            condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                key: key.to_string(),
                predicate: Some(predicate),
            })),
        }
    }

    fn equals(key: &str, value: serde_json::Value) -> pb::Condition {
        field_condition(
            key,
            pb::field_condition::Predicate::Equals(json_to_value(&value)),
        )
    }

    fn refusal(filter: &pb::Filter) -> String {
        filter_from_proto("filter", filter).unwrap_err().to_string()
    }

    #[test]
    fn converts_every_kind_of_condition() {
        let filter = pb::Filter {
            must: vec![equals("lang", json!("en"))],
            should: vec![field_condition(
                "year",
                pb::field_condition::Predicate::Range(pb::Range {
                    gte: Some(2020.0),
                    ..pb::Range::default()
                }),
            )],
            must_not: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Filter(pb::Filter {
                    must: vec![field_condition(
                        "tag",
                        pb::field_condition::Predicate::AnyOf(prost_types::ListValue {
                            values: vec![json_to_value(&json!("a")), json_to_value(&json!(2))],
                        }),
                    )],
                    ..pb::Filter::default()
                })),
            }],
        };
        let converted = filter_from_proto("filter", &filter).unwrap();
        assert_eq!(
            converted,
            PayloadFilter {
                must: vec![Condition::Field {
                    key: "lang".to_string(),
                    predicate: Predicate::Equals(json!("en")),
                }],
                should: vec![Condition::Field {
                    key: "year".to_string(),
                    predicate: Predicate::Range(NumericRange {
                        gte: Some(2020.0),
                        ..NumericRange::default()
                    }),
                }],
                must_not: vec![Condition::Nested(PayloadFilter {
                    must: vec![Condition::Field {
                        key: "tag".to_string(),
                        predicate: Predicate::AnyOf(vec![json!("a"), json!(2)]),
                    }],
                    ..PayloadFilter::default()
                })],
            }
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_rule() {
        let no_predicate = pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                    key: "k".to_string(),
                    predicate: None,
                })),
            }],
            ..pb::Filter::default()
        };
        assert!(refusal(&no_predicate).contains("filter.must[0].field"));
        let empty_key = pb::Filter {
            should: vec![equals("", json!(1))],
            ..pb::Filter::default()
        };
        assert!(refusal(&empty_key).contains("filter.should[0].field.key"));
        let open_range = pb::Filter {
            must: vec![
                equals("a", json!(1)),
                field_condition(
                    "n",
                    pb::field_condition::Predicate::Range(pb::Range::default()),
                ),
            ],
            ..pb::Filter::default()
        };
        assert!(refusal(&open_range).contains("filter.must[1].field.range"));
        let infinite = pb::Filter {
            must: vec![field_condition(
                "n",
                pb::field_condition::Predicate::Range(pb::Range {
                    lt: Some(f64::INFINITY),
                    ..pb::Range::default()
                }),
            )],
            ..pb::Filter::default()
        };
        assert!(refusal(&infinite).contains("filter.must[0].field.range.lt"));
        let empty_any_of = pb::Filter {
            must_not: vec![field_condition(
                "n",
                pb::field_condition::Predicate::AnyOf(prost_types::ListValue::default()),
            )],
            ..pb::Filter::default()
        };
        assert!(refusal(&empty_any_of).contains("filter.must_not[0].field.any_of"));
        let too_many = pb::Filter {
            must: (0..=MAX_CONDITIONS)
                .map(|n| equals("k", json!(n)))
                .collect(),
            ..pb::Filter::default()
        };
        assert!(refusal(&too_many).contains("at most 64 conditions"));
        let mut deep = pb::Filter {
            must: vec![equals("k", json!(1))],
            ..pb::Filter::default()
        };
        for _ in 0..MAX_DEPTH {
            deep = pb::Filter {
                must: vec![pb::Condition {
                    condition: Some(pb::condition::Condition::Filter(deep)),
                }],
                ..pb::Filter::default()
            };
        }
        assert!(refusal(&deep).contains("nest at most 4 deep"));
    }
}
