//! The payload index of a collection: for each key the collection declared,
//! which graph slots hold which value, so that a filter on those keys finds
//! its candidates in O(matches) instead of reading every payload.
//!
//! Candidates are a superset of the matches (a list's items are indexed one
//! by one, large integers share an f64); callers check each candidate
//! against the whole filter.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use ordered_float::OrderedFloat;
use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use crate::filter::{Condition, NumericRange, PayloadFilter, Predicate};

#[derive(Debug, Default)]
pub struct PayloadIndex {
    keys: HashMap<String, KeyIndex>,
}

#[derive(Debug, Default)]
struct KeyIndex {
    /// Strings, booleans and null.
    by_scalar: HashMap<Scalar, RoaringBitmap>,
    /// Numbers, ordered for ranges; integers and floats by value.
    by_number: BTreeMap<OrderedFloat<f64>, RoaringBitmap>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scalar {
    Null,
    Bool(bool),
    Text(String),
}

/// What an index entry is keyed by.
enum Entry {
    Scalar(Scalar),
    Number(f64),
}

impl Entry {
    /// `None` for lists and objects, which are not indexed whole.
    fn of(value: &Value) -> Option<Entry> {
        match value {
            Value::Null => Some(Entry::Scalar(Scalar::Null)),
            Value::Bool(flag) => Some(Entry::Scalar(Scalar::Bool(*flag))),
            Value::String(text) => Some(Entry::Scalar(Scalar::Text(text.clone()))),
            Value::Number(number) => number.as_f64().map(Entry::Number),
            Value::Array(_) | Value::Object(_) => None,
        }
    }
}

/// The entries a payload value is indexed under: itself, or a list's items.
fn entries(value: &Value) -> Vec<Entry> {
    match value {
        Value::Array(items) => items.iter().filter_map(Entry::of).collect(),
        other => Entry::of(other).into_iter().collect(),
    }
}

impl KeyIndex {
    fn slots_mut(&mut self, entry: Entry) -> &mut RoaringBitmap {
        match entry {
            Entry::Scalar(scalar) => self.by_scalar.entry(scalar).or_default(),
            Entry::Number(number) => self.by_number.entry(OrderedFloat(number)).or_default(),
        }
    }

    fn remove(&mut self, entry: Entry, slot: u32) {
        match entry {
            Entry::Scalar(scalar) => {
                if let Some(slots) = self.by_scalar.get_mut(&scalar) {
                    slots.remove(slot);
                    if slots.is_empty() {
                        self.by_scalar.remove(&scalar);
                    }
                }
            }
            Entry::Number(number) => {
                let key = OrderedFloat(number);
                if let Some(slots) = self.by_number.get_mut(&key) {
                    slots.remove(slot);
                    if slots.is_empty() {
                        self.by_number.remove(&key);
                    }
                }
            }
        }
    }

    fn equal_to(&self, value: &Value) -> Option<RoaringBitmap> {
        let found = match Entry::of(value)? {
            Entry::Scalar(scalar) => self.by_scalar.get(&scalar),
            Entry::Number(number) => self.by_number.get(&OrderedFloat(number)),
        };
        Some(found.cloned().unwrap_or_default())
    }

    fn within(&self, range: &NumericRange) -> RoaringBitmap {
        let lower = match (range.gt, range.gte) {
            (Some(gt), Some(gte)) if gt >= gte => Bound::Excluded(OrderedFloat(gt)),
            (_, Some(gte)) => Bound::Included(OrderedFloat(gte)),
            (Some(gt), None) => Bound::Excluded(OrderedFloat(gt)),
            (None, None) => Bound::Unbounded,
        };
        let upper = match (range.lt, range.lte) {
            (Some(lt), Some(lte)) if lt <= lte => Bound::Excluded(OrderedFloat(lt)),
            (_, Some(lte)) => Bound::Included(OrderedFloat(lte)),
            (Some(lt), None) => Bound::Excluded(OrderedFloat(lt)),
            (None, None) => Bound::Unbounded,
        };
        if bounds_are_empty(lower, upper) {
            return RoaringBitmap::new();
        }
        let mut slots = RoaringBitmap::new();
        for matching in self.by_number.range((lower, upper)).map(|(_, slots)| slots) {
            slots |= matching;
        }
        slots
    }
}

/// `BTreeMap::range` panics on a start above its end; such a range holds
/// nothing.
fn bounds_are_empty(lower: Bound<OrderedFloat<f64>>, upper: Bound<OrderedFloat<f64>>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low) | Bound::Excluded(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low >= high,
        _ => false,
    }
}

impl PayloadIndex {
    pub fn new(keys: &[String]) -> PayloadIndex {
        PayloadIndex {
            keys: keys
                .iter()
                .map(|key| (key.clone(), KeyIndex::default()))
                .collect(),
        }
    }

    pub fn insert(&mut self, slot: u32, payload: &Map<String, Value>) {
        for (key, index) in &mut self.keys {
            if let Some(value) = payload.get(key) {
                for entry in entries(value) {
                    index.slots_mut(entry).insert(slot);
                }
            }
        }
    }

    pub fn remove(&mut self, slot: u32, payload: &Map<String, Value>) {
        for (key, index) in &mut self.keys {
            if let Some(value) = payload.get(key) {
                for entry in entries(value) {
                    index.remove(entry, slot);
                }
            }
        }
    }

    /// A superset of the slots `filter` keeps, when its conditions on
    /// indexed keys narrow it; `None` when only a scan can tell.
    pub fn candidates(&self, filter: &PayloadFilter) -> Option<RoaringBitmap> {
        let mut narrowed: Option<RoaringBitmap> = None;
        for condition in &filter.must {
            if let Some(slots) = self.condition_candidates(condition) {
                narrowed = Some(match narrowed {
                    Some(so_far) => so_far & slots,
                    None => slots,
                });
            }
        }
        if !filter.should.is_empty() {
            let mut any = RoaringBitmap::new();
            for condition in &filter.should {
                any |= self.condition_candidates(condition)?;
            }
            narrowed = Some(match narrowed {
                Some(so_far) => so_far & any,
                None => any,
            });
        }
        // `must_not` cannot narrow a superset: the slots it names may still
        // be kept by nothing else, so they are left to the per-point check.
        narrowed
    }

    fn condition_candidates(&self, condition: &Condition) -> Option<RoaringBitmap> {
        match condition {
            Condition::Nested(filter) => self.candidates(filter),
            Condition::Field { key, predicate } => {
                let index = self.keys.get(key)?;
                match predicate {
                    Predicate::Equals(value) => index.equal_to(value),
                    Predicate::AnyOf(values) => {
                        let mut slots = RoaringBitmap::new();
                        for value in values {
                            slots |= index.equal_to(value)?;
                        }
                        Some(slots)
                    }
                    Predicate::Range(range) => Some(index.within(range)),
                }
            }
        }
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

    fn must(conditions: Vec<Condition>) -> PayloadFilter {
        PayloadFilter {
            must: conditions,
            ..PayloadFilter::default()
        }
    }

    fn slots(bitmap: Option<RoaringBitmap>) -> Option<Vec<u32>> {
        bitmap.map(|bitmap| bitmap.iter().collect())
    }

    fn indexed() -> PayloadIndex {
        let mut index = PayloadIndex::new(&["lang".to_string(), "year".to_string()]);
        let payloads = [
            json!({"lang": "en", "year": 2019}),
            json!({"lang": "de", "year": 2020.5}),
            json!({"lang": ["en", "fr"], "year": 2021}),
            json!({"lang": "en", "other": 1}),
            json!({"year": "2020"}),
        ];
        for (slot, payload) in payloads.into_iter().enumerate() {
            index.insert(slot as u32, &object(payload));
        }
        index
    }

    #[test]
    fn equality_in_and_range_find_their_slots() {
        let index = indexed();
        let english = must(vec![C::field("lang", Predicate::Equals(json!("en")))]);
        assert_eq!(slots(index.candidates(&english)), Some(vec![0, 2, 3]));
        let either = must(vec![C::field(
            "lang",
            Predicate::AnyOf(vec![json!("de"), json!("fr")]),
        )]);
        assert_eq!(slots(index.candidates(&either)), Some(vec![1, 2]));
        let recent = must(vec![C::field(
            "year",
            Predicate::Range(NumericRange {
                gt: Some(2019.0),
                lte: Some(2021.0),
                ..NumericRange::default()
            }),
        )]);
        assert_eq!(slots(index.candidates(&recent)), Some(vec![1, 2]));
        let exact_year = must(vec![C::field("year", Predicate::Equals(json!(2021.0)))]);
        assert_eq!(slots(index.candidates(&exact_year)), Some(vec![2]));
        let empty_range = must(vec![C::field(
            "year",
            Predicate::Range(NumericRange {
                gte: Some(2022.0),
                lt: Some(2000.0),
                ..NumericRange::default()
            }),
        )]);
        assert_eq!(slots(index.candidates(&empty_range)), Some(vec![]));
    }

    #[test]
    fn unindexed_keys_and_whole_lists_need_a_scan() {
        let index = indexed();
        let other = must(vec![C::field("other", Predicate::Equals(json!(1)))]);
        assert_eq!(slots(index.candidates(&other)), None);
        let list = must(vec![C::field(
            "lang",
            Predicate::Equals(json!(["en", "fr"])),
        )]);
        assert_eq!(slots(index.candidates(&list)), None);
        // One narrowing `must` is enough; `should` needs all of its own.
        let mixed = must(vec![
            C::field("other", Predicate::Equals(json!(1))),
            C::field("lang", Predicate::Equals(json!("en"))),
        ]);
        assert_eq!(slots(index.candidates(&mixed)), Some(vec![0, 2, 3]));
        let should = PayloadFilter {
            should: vec![
                C::field("lang", Predicate::Equals(json!("de"))),
                C::field("other", Predicate::Equals(json!(1))),
            ],
            ..PayloadFilter::default()
        };
        assert_eq!(slots(index.candidates(&should)), None);
    }

    #[test]
    fn removed_slots_are_no_longer_candidates() {
        let mut index = indexed();
        index.remove(2, &object(json!({"lang": ["en", "fr"], "year": 2021})));
        let english = must(vec![C::field("lang", Predicate::Equals(json!("en")))]);
        assert_eq!(slots(index.candidates(&english)), Some(vec![0, 3]));
        let french = must(vec![C::field("lang", Predicate::Equals(json!("fr")))]);
        assert_eq!(slots(index.candidates(&french)), Some(vec![]));
        let nested = must(vec![Condition::Nested(PayloadFilter {
            should: vec![
                C::field("lang", Predicate::Equals(json!("de"))),
                C::field("year", Predicate::Equals(json!(2019))),
            ],
            ..PayloadFilter::default()
        })]);
        assert_eq!(slots(index.candidates(&nested)), Some(vec![0, 1]));
    }
}
