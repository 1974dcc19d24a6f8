//! The payload filter of a search, scroll or count: `must` conditions that
//! all hold, `should` conditions of which one holds (when there are any)
//! and `must_not` conditions none of which holds, as Qdrant has them.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadFilter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field { key: String, predicate: Predicate },
    Nested(PayloadFilter),
}

/// What a payload value must be. A list value meets a predicate when one of
/// its items does, so `{"tags": ["a", "b"]}` has the tag `"a"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Equals(Value),
    AnyOf(Vec<Value>),
    Range(NumericRange),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NumericRange {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl NumericRange {
    pub fn contains(&self, number: f64) -> bool {
        self.gt.is_none_or(|bound| number > bound)
            && self.gte.is_none_or(|bound| number >= bound)
            && self.lt.is_none_or(|bound| number < bound)
            && self.lte.is_none_or(|bound| number <= bound)
    }
}

impl PayloadFilter {
    /// Every key equal to its value: the request's `payload_equals`.
    pub fn equalities(conditions: Map<String, Value>) -> PayloadFilter {
        PayloadFilter {
            must: conditions
                .into_iter()
                .map(|(key, value)| Condition::Field {
                    key,
                    predicate: Predicate::Equals(value),
                })
                .collect(),
            ..PayloadFilter::default()
        }
    }

    /// Both filters at once.
    pub fn and(mut self, other: PayloadFilter) -> PayloadFilter {
        if other.is_empty() {
            return self;
        }
        if self.is_empty() {
            return other;
        }
        self.must.push(Condition::Nested(other));
        self
    }

    /// True when the filter keeps everything.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.should.is_empty() && self.must_not.is_empty()
    }

    pub fn matches(&self, payload: &Map<String, Value>) -> bool {
        self.must.iter().all(|condition| condition.holds(payload))
            && (self.should.is_empty() || self.should.iter().any(|c| c.holds(payload)))
            && !self
                .must_not
                .iter()
                .any(|condition| condition.holds(payload))
    }
}

impl Condition {
    pub fn field(key: &str, predicate: Predicate) -> Condition {
        Condition::Field {
            key: key.to_string(),
            predicate,
        }
    }

    fn holds(&self, payload: &Map<String, Value>) -> bool {
        match self {
            Condition::Field { key, predicate } => payload
                .get(key)
                .is_some_and(|value| predicate.holds_for(value)),
            Condition::Nested(filter) => filter.matches(payload),
        }
    }
}

impl Predicate {
    fn holds_for(&self, value: &Value) -> bool {
        if self.holds_for_item(value) {
            return true;
        }
        match value {
            Value::Array(items) => items.iter().any(|item| self.holds_for_item(item)),
            _ => false,
        }
    }

    fn holds_for_item(&self, value: &Value) -> bool {
        match self {
            Predicate::Equals(expected) => json_equal(value, expected),
            Predicate::AnyOf(expected) => expected.iter().any(|item| json_equal(value, item)),
            Predicate::Range(range) => value.as_f64().is_some_and(|number| range.contains(number)),
        }
    }
}

/// JSON equality with numbers compared by value, so that `1` (stored as an
/// integer) equals `1.0`.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => match (left.as_i64(), right.as_i64()) {
            (Some(left), Some(right)) => left == right,
            _ => left.as_f64() == right.as_f64(),
        },
        _ => left == right,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    use Condition as C;

    #[test]
    fn every_equality_must_hold() {
        let filter = PayloadFilter::equalities(object(json!({"lang": "en", "page": 3})));
        assert!(filter.matches(&object(json!({"lang": "en", "page": 3, "extra": true}))));
        assert!(filter.matches(&object(json!({"lang": "en", "page": 3.0}))));
        assert!(!filter.matches(&object(json!({"lang": "en"}))));
        assert!(!filter.matches(&object(json!({"lang": "en", "page": "3"}))));
        assert!(!filter.matches(&object(json!({"lang": "fr", "page": 3}))));
        assert!(PayloadFilter::default().matches(&object(json!({}))));
    }

    #[test]
    fn null_matches_only_an_explicit_null() {
        let filter = PayloadFilter::equalities(object(json!({"owner": null})));
        assert!(filter.matches(&object(json!({"owner": null}))));
        assert!(!filter.matches(&object(json!({}))));
    }

    #[test]
    fn should_needs_one_and_must_not_needs_none() {
        let filter = PayloadFilter {
            must: vec![C::field("kind", Predicate::Equals(json!("doc")))],
            should: vec![
                C::field("lang", Predicate::AnyOf(vec![json!("en"), json!("de")])),
                C::field(
                    "year",
                    Predicate::Range(NumericRange {
                        gte: Some(2020.0),
                        ..NumericRange::default()
                    }),
                ),
            ],
            must_not: vec![C::field("draft", Predicate::Equals(json!(true)))],
        };
        assert!(filter.matches(&object(json!({"kind": "doc", "lang": "de"}))));
        assert!(filter.matches(&object(json!({"kind": "doc", "lang": "fr", "year": 2021}))));
        assert!(!filter.matches(&object(json!({"kind": "doc", "lang": "fr", "year": 2019}))));
        assert!(!filter.matches(&object(json!({"kind": "doc", "lang": "en", "draft": true}))));
        assert!(!filter.matches(&object(json!({"kind": "img", "lang": "en"}))));
    }

    #[test]
    fn list_values_match_by_any_item_and_ranges_need_numbers() {
        let tagged = PayloadFilter {
            must: vec![C::field("tags", Predicate::Equals(json!("rust")))],
            ..PayloadFilter::default()
        };
        assert!(tagged.matches(&object(json!({"tags": ["go", "rust"]}))));
        assert!(!tagged.matches(&object(json!({"tags": ["go"]}))));
        let whole_list = PayloadFilter::equalities(object(json!({"tags": ["go", "rust"]})));
        assert!(whole_list.matches(&object(json!({"tags": ["go", "rust"]}))));

        let range = NumericRange {
            gt: Some(1.0),
            lte: Some(3.0),
            ..NumericRange::default()
        };
        let in_range = PayloadFilter {
            must: vec![C::field("n", Predicate::Range(range))],
            ..PayloadFilter::default()
        };
        assert!(!in_range.matches(&object(json!({"n": 1}))));
        assert!(in_range.matches(&object(json!({"n": 1.5}))));
        assert!(in_range.matches(&object(json!({"n": 3}))));
        assert!(!in_range.matches(&object(json!({"n": "2"}))));
        assert!(in_range.matches(&object(json!({"n": [0, 2]}))));
    }

    #[test]
    fn and_nests_the_second_filter() {
        let first = PayloadFilter::equalities(object(json!({"a": 1})));
        let second = PayloadFilter {
            must_not: vec![C::field("b", Predicate::Equals(json!(2)))],
            ..PayloadFilter::default()
        };
        let both = first.and(second);
        assert!(both.matches(&object(json!({"a": 1, "b": 3}))));
        assert!(!both.matches(&object(json!({"a": 1, "b": 2}))));
        assert!(!both.matches(&object(json!({"a": 2}))));
        assert_eq!(
            PayloadFilter::default().and(PayloadFilter::default()),
            PayloadFilter::default()
        );
    }
}
