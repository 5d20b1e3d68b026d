//! Signed statements (grants, approvals, denials, receipts, submissions, enrollment requests,
//! directory entries, revocations, key rotations, reset approvals, directory-log leaves, sources'
//! dispatches, submissions and refusals): the
//! JSON envelope and each canonical binary body. A body
//! that decodes re-encodes to exactly the same bytes (one encoding per value: no malleability).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::directory::{DirectoryEntry, EnrollmentRequest, Revocation};
use sealrelay::core::dispatch::{Dispatch, SourceRefusal, SourceSubmission};
use sealrelay::core::envelope::submission::Submission;
use sealrelay::core::grant::{Approval, Denial, Grant, Receipt};
use sealrelay::core::keylog::{DirectoryLeaf, KeyRotation, ResetApproval};
use sealrelay::core::sign::{Signed, StatementType};

macro_rules! canonical {
    ($ty:ty, $data:expr) => {
        if let Ok(v) = <$ty>::decode($data) {
            assert_eq!(v.encode(), $data, "{} has a second encoding", stringify!($ty));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 15 {
        0 => canonical!(Grant, body),
        1 => canonical!(Approval, body),
        2 => canonical!(Receipt, body),
        3 => canonical!(Submission, body),
        4 => canonical!(EnrollmentRequest, body),
        5 => canonical!(DirectoryEntry, body),
        6 => canonical!(Revocation, body),
        7 => canonical!(Denial, body),
        9 => canonical!(KeyRotation, body),
        10 => canonical!(ResetApproval, body),
        11 => canonical!(DirectoryLeaf, body),
        12 => canonical!(Dispatch, body),
        13 => canonical!(SourceSubmission, body),
        14 => canonical!(SourceRefusal, body),
        _ => {
            for ty in StatementType::ALL {
                if let Ok(s) = Signed::from_json(body, ty) {
                    let again = Signed::from_json(s.to_json().as_bytes(), ty).unwrap();
                    assert_eq!(again, s);
                }
            }
        }
    }
});
