//! Any two text edits from the wire on any text, as the server meets them when two people type
//! at once: parsing, applying and transforming never panic, and when both edits fit the text,
//! applying them in either order (each moved over the other) gives one text — what keeps every
//! page showing the same description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_app::model::TextEdit;

// Input: the text, a line break, one edit (JSON, ot.js format), a line break, the other.
fuzz_target!(|input: &str| {
    let mut lines = input.splitn(3, '\n');
    let (Some(text), Some(mine), Some(landed)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let (Ok(mine), Ok(landed)) = (
        serde_json::from_str::<TextEdit>(mine),
        serde_json::from_str::<TextEdit>(landed),
    ) else {
        return;
    };
    let (Ok(after_mine), Ok(after_landed)) = (mine.apply(text), landed.apply(text)) else {
        // Misfits are refused, not guessed: transforming them must not panic either.
        let _ = mine.transform(&landed);
        return;
    };
    let (mine_moved, landed_moved) = mine.transform(&landed).expect("same base length");
    let one = mine_moved.apply(&after_landed).expect("moved over what landed");
    let other = landed_moved.apply(&after_mine).expect("moved over mine");
    assert_eq!(one, other, "both orders give one text");
    let composed = landed.compose(&mine_moved).expect("consecutive edits compose");
    assert_eq!(composed.apply(text).expect("composed fits"), one);
    let caret = text.chars().count() / 2;
    assert!(landed.transform_index(caret) <= after_landed.chars().count());
});
