//! Proptest strategies for values, shared by this crate's property tests.

use proptest::prelude::*;

use crate::value::{Object, Value};

/// Any value, nested a few levels, including the float edge cases.
pub fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int64),
        prop_oneof![
            any::<f64>(),
            Just(-0.0),
            Just(0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY)
        ]
        .prop_map(Value::Float64),
        any::<bool>().prop_map(Value::Boolean),
        "[a-c\\x00]{0,4}".prop_map(Value::String),
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..4)
            .prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c]{1,3}", inner, 0..4)
                .prop_map(|m| Value::Object((m.into_iter().collect::<Object>()).into())),
        ]
    })
}
