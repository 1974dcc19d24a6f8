//! Assertions on a failed call's status: the code alone passes for the
//! wrong reason too often, so every check also names what the message must
//! say (the field, the rule, the unknown thing).

use std::fmt::Debug;

/// Asserts that `result` failed with `code` and a message containing every
/// one of `needles`; `case` labels the failure.
pub fn assert_status<T: Debug>(
    case: &str,
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needles: &[&str],
) {
    let status = expect_status(case, result);
    assert_eq!(
        status.code(),
        code,
        "{case}: expected {code:?}, got {:?}: {}",
        status.code(),
        status.message()
    );
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{case}: message {:?} does not name {needle:?}",
            status.message()
        );
    }
}

/// The status of a call that must have failed, for a test that checks more
/// than the code and message (details, metadata, an exact message).
pub fn expect_status<T: Debug>(case: &str, result: Result<T, tonic::Status>) -> tonic::Status {
    match result {
        Ok(value) => panic!("{case}: expected an error status, got Ok({value:?})"),
        Err(status) => status,
    }
}
