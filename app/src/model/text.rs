//! Text edits: how two people type into the same field at once and both keep every character.
//!
//! A [`TextEdit`] walks a text from start to end: keep (`retain`) some characters, `insert` new
//! ones, `delete` some. It applies to a text of exactly [`TextEdit::base_len`] characters
//! (Unicode scalar values, not bytes or UTF-16 units). This is operational transformation as
//! ot.js does it, with the same wire format: a JSON array where a positive integer retains, a
//! negative integer deletes and a string inserts — `[5, "big ", -3]`.
//!
//! Three operations make concurrent editing work:
//! - [`TextEdit::compose`]: one edit, then another, as a single edit (a client batches keystrokes).
//! - [`TextEdit::transform`]: two edits made on the same text, each moved over the other, so that
//!   applying them in either order gives the same text. When both insert at the same place, the
//!   edit that landed first keeps its text first — the server and every client use this one rule,
//!   which is what makes them converge.
//! - [`TextEdit::transform_index`]: where a caret ends up after someone else's edit.

use std::fmt;

use serde::de::{self, Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One step of a [`TextEdit`]. Counts are in characters and never zero; inserts never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextStep {
    Retain(usize),
    Insert(String),
    Delete(usize),
}

/// An edit of one text; see the module documentation. Always normalized: no empty steps, no two
/// neighbours of one kind, and an insert next to a delete comes first, so equal edits compare
/// equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextEdit {
    steps: Vec<TextStep>,
    base_len: usize,
    target_len: usize,
}

/// An edit met a text (or another edit) of a length it was not made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the edit is for a text of {expected} characters; this one has {found}")]
pub struct LengthMismatch {
    pub expected: usize,
    pub found: usize,
}

/// Longest retain or delete step accepted from the wire: far beyond any Rally text, small enough
/// that lengths never overflow.
const STEP_MAX: usize = 1 << 24;
const STEP_TOO_LONG: &str = "a text edit step counts more than 16777216 characters";

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// `text` split after `n` characters (all of it when shorter).
fn split_chars(text: &str, n: usize) -> (&str, &str) {
    match text.char_indices().nth(n) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    }
}

impl TextEdit {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn steps(&self) -> &[TextStep] {
        &self.steps
    }

    /// Length of the text this edit applies to.
    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// Length of the text it produces.
    pub fn target_len(&self) -> usize {
        self.target_len
    }

    /// True when it changes nothing (only retains).
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| matches!(s, TextStep::Retain(_)))
    }

    pub fn retain(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        self.target_len += n;
        match self.steps.last_mut() {
            Some(TextStep::Retain(m)) => *m += n,
            _ => self.steps.push(TextStep::Retain(n)),
        }
        self
    }

    pub fn insert(&mut self, text: &str) -> &mut Self {
        if text.is_empty() {
            return self;
        }
        self.target_len += char_len(text);
        let len = self.steps.len();
        match self.steps.last_mut() {
            Some(TextStep::Insert(last)) => last.push_str(text),
            // Inserts go before a delete they touch, so one edit has one spelling.
            Some(TextStep::Delete(_)) => {
                if let Some(TextStep::Insert(before)) =
                    len.checked_sub(2).map(|i| &mut self.steps[i])
                {
                    before.push_str(text);
                } else {
                    self.steps
                        .insert(len - 1, TextStep::Insert(text.to_owned()));
                }
            }
            _ => self.steps.push(TextStep::Insert(text.to_owned())),
        }
        self
    }

    pub fn delete(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len += n;
        match self.steps.last_mut() {
            Some(TextStep::Delete(m)) => *m += n,
            _ => self.steps.push(TextStep::Delete(n)),
        }
        self
    }

    fn push(&mut self, step: TextStep) {
        match step {
            TextStep::Retain(n) => self.retain(n),
            TextStep::Insert(text) => self.insert(&text),
            TextStep::Delete(n) => self.delete(n),
        };
    }

    /// The edit that turns `old` into `new`: keep the common start and end, replace the middle.
    pub fn diff(old: &str, new: &str) -> TextEdit {
        let prefix: usize = old
            .chars()
            .zip(new.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let (old_len, new_len) = (char_len(old), char_len(new));
        let suffix = old
            .chars()
            .rev()
            .zip(new.chars().rev())
            .take(old_len.min(new_len) - prefix)
            .take_while(|(a, b)| a == b)
            .count();
        let middle = split_chars(split_chars(new, prefix).1, new_len - prefix - suffix).0;
        let mut edit = TextEdit::new();
        edit.retain(prefix)
            .delete(old_len - prefix - suffix)
            .insert(middle)
            .retain(suffix);
        edit
    }

    /// The text this edit makes of `text`.
    pub fn apply(&self, text: &str) -> Result<String, LengthMismatch> {
        let found = char_len(text);
        if found != self.base_len {
            return Err(LengthMismatch {
                expected: self.base_len,
                found,
            });
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        for step in &self.steps {
            match step {
                TextStep::Retain(n) => {
                    let (kept, after) = split_chars(rest, *n);
                    out.push_str(kept);
                    rest = after;
                }
                TextStep::Insert(inserted) => out.push_str(inserted),
                TextStep::Delete(n) => rest = split_chars(rest, *n).1,
            }
        }
        Ok(out)
    }

    /// This edit followed by `next`, as one edit.
    pub fn compose(&self, next: &TextEdit) -> Result<TextEdit, LengthMismatch> {
        if self.target_len != next.base_len {
            return Err(LengthMismatch {
                expected: next.base_len,
                found: self.target_len,
            });
        }
        let mut out = TextEdit::new();
        let mut first = self.steps.iter().cloned();
        let mut second = next.steps.iter().cloned();
        let (mut a, mut b) = (first.next(), second.next());
        loop {
            match (a.take(), b.take()) {
                (None, None) => break,
                // What the first edit deleted, the second never saw.
                (Some(TextStep::Delete(n)), rest) => {
                    out.delete(n);
                    a = first.next();
                    b = rest;
                }
                // What the second edit inserted, the first never saw.
                (rest, Some(TextStep::Insert(text))) => {
                    out.insert(&text);
                    a = rest;
                    b = second.next();
                }
                (Some(TextStep::Retain(n)), Some(TextStep::Retain(m))) => {
                    let k = n.min(m);
                    out.retain(k);
                    a = if n > k {
                        Some(TextStep::Retain(n - k))
                    } else {
                        first.next()
                    };
                    b = if m > k {
                        Some(TextStep::Retain(m - k))
                    } else {
                        second.next()
                    };
                }
                (Some(TextStep::Retain(n)), Some(TextStep::Delete(m))) => {
                    let k = n.min(m);
                    out.delete(k);
                    a = if n > k {
                        Some(TextStep::Retain(n - k))
                    } else {
                        first.next()
                    };
                    b = if m > k {
                        Some(TextStep::Delete(m - k))
                    } else {
                        second.next()
                    };
                }
                (Some(TextStep::Insert(text)), Some(TextStep::Retain(m))) => {
                    let n = char_len(&text);
                    let k = n.min(m);
                    let (kept, rest) = split_chars(&text, k);
                    out.insert(kept);
                    a = if n > k {
                        Some(TextStep::Insert(rest.to_owned()))
                    } else {
                        first.next()
                    };
                    b = if m > k {
                        Some(TextStep::Retain(m - k))
                    } else {
                        second.next()
                    };
                }
                (Some(TextStep::Insert(text)), Some(TextStep::Delete(m))) => {
                    let n = char_len(&text);
                    let k = n.min(m);
                    let rest = split_chars(&text, k).1;
                    a = if n > k {
                        Some(TextStep::Insert(rest.to_owned()))
                    } else {
                        first.next()
                    };
                    b = if m > k {
                        Some(TextStep::Delete(m - k))
                    } else {
                        second.next()
                    };
                }
                // Lengths matched, so neither runs out before the other.
                (None, Some(_)) | (Some(_), None) => unreachable!("compose of matched lengths"),
            }
        }
        Ok(out)
    }

    /// `self` and `landed` were both made on the same text; `landed` was applied first. Returns
    /// `(self', landed')`: `self'` applies after `landed`, `landed'` after `self`, and both orders
    /// give the same text. Where both insert at one place, `landed`'s text comes first.
    pub fn transform(&self, landed: &TextEdit) -> Result<(TextEdit, TextEdit), LengthMismatch> {
        if self.base_len != landed.base_len {
            return Err(LengthMismatch {
                expected: landed.base_len,
                found: self.base_len,
            });
        }
        let (mut mine, mut theirs) = (TextEdit::new(), TextEdit::new());
        let mut own_steps = self.steps.iter().cloned();
        let mut landed_steps = landed.steps.iter().cloned();
        let (mut a, mut b) = (own_steps.next(), landed_steps.next());
        loop {
            match (a.take(), b.take()) {
                (None, None) => break,
                (rest, Some(TextStep::Insert(text))) => {
                    mine.retain(char_len(&text));
                    theirs.insert(&text);
                    a = rest;
                    b = landed_steps.next();
                }
                (Some(TextStep::Insert(text)), rest) => {
                    mine.insert(&text);
                    theirs.retain(char_len(&text));
                    a = own_steps.next();
                    b = rest;
                }
                (Some(own), Some(other)) => {
                    let (n, m) = (step_len(&own), step_len(&other));
                    let k = n.min(m);
                    match (&own, &other) {
                        (TextStep::Retain(_), TextStep::Retain(_)) => {
                            mine.retain(k);
                            theirs.retain(k);
                        }
                        (TextStep::Delete(_), TextStep::Retain(_)) => {
                            mine.delete(k);
                        }
                        (TextStep::Retain(_), TextStep::Delete(_)) => {
                            theirs.delete(k);
                        }
                        // Both deleted the same characters: nothing left to do for either.
                        _ => {}
                    }
                    a = if n > k {
                        Some(shorten(own, k))
                    } else {
                        own_steps.next()
                    };
                    b = if m > k {
                        Some(shorten(other, k))
                    } else {
                        landed_steps.next()
                    };
                }
                (None, Some(_)) | (Some(_), None) => unreachable!("transform of matched lengths"),
            }
        }
        Ok((mine, theirs))
    }

    /// Where its author's caret is after this edit: just after the last text it inserted, or
    /// where it last deleted. `None` for an edit that changes nothing.
    pub fn caret_after(&self) -> Option<usize> {
        let (mut at, mut caret) = (0, None);
        for step in &self.steps {
            match step {
                TextStep::Retain(n) => at += n,
                TextStep::Insert(text) => {
                    at += char_len(text);
                    caret = Some(at);
                }
                TextStep::Delete(_) => caret = Some(at),
            }
        }
        caret
    }

    /// Where a caret at `index` of the base text is after this edit. A caret exactly where text is
    /// inserted stays before it; a caret inside deleted text moves to where the deletion was.
    pub fn transform_index(&self, index: usize) -> usize {
        let (mut old, mut new) = (0, 0);
        for step in &self.steps {
            match step {
                TextStep::Retain(n) => {
                    if index < old + n {
                        return new + (index - old);
                    }
                    old += n;
                    new += n;
                }
                TextStep::Insert(text) => {
                    if old < index {
                        new += char_len(text);
                    }
                }
                TextStep::Delete(n) => {
                    if index < old + n {
                        return new;
                    }
                    old += n;
                }
            }
        }
        (new + index.saturating_sub(old)).min(self.target_len)
    }
}

/// Length of a retain or delete step (inserts are handled before this is asked).
fn step_len(step: &TextStep) -> usize {
    match step {
        TextStep::Retain(n) | TextStep::Delete(n) => *n,
        TextStep::Insert(text) => char_len(text),
    }
}

/// The rest of a retain or delete step after its first `k` characters.
fn shorten(step: TextStep, k: usize) -> TextStep {
    match step {
        TextStep::Retain(n) => TextStep::Retain(n - k),
        TextStep::Delete(n) => TextStep::Delete(n - k),
        TextStep::Insert(text) => TextStep::Insert(split_chars(&text, k).1.to_owned()),
    }
}

impl fmt::Display for TextEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for TextEdit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.steps.len()))?;
        for step in &self.steps {
            match step {
                TextStep::Retain(n) => seq.serialize_element(&(*n as u64))?,
                TextStep::Insert(text) => seq.serialize_element(text)?,
                TextStep::Delete(n) => seq.serialize_element(&-(*n as i64))?,
            }
        }
        seq.end()
    }
}

/// One step as sent: a count (retain if positive, delete if negative) or the text to insert.
enum Raw {
    Count(i64),
    Text(String),
}

/// Read by type, not by trying each variant in turn: `#[serde(untagged)]` buffers every value
/// first and then tries a decoder per variant.
impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Step;
        impl Visitor<'_> for Step {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number or a string")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Raw, E> {
                Ok(Raw::Count(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Raw, E> {
                i64::try_from(n)
                    .map(Raw::Count)
                    .map_err(|_| E::custom(STEP_TOO_LONG))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Raw, E> {
                Ok(Raw::Text(text.to_owned()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Raw, E> {
                Ok(Raw::Text(text))
            }
        }
        deserializer.deserialize_any(Step)
    }
}

impl<'de> Deserialize<'de> for TextEdit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Vec::<Raw>::deserialize(deserializer)?;
        let mut edit = TextEdit::new();
        for step in raw {
            let step = match step {
                Raw::Count(0) => {
                    return Err(D::Error::custom("a text edit step must not be 0"));
                }
                Raw::Count(n) => {
                    let count = usize::try_from(n.unsigned_abs())
                        .ok()
                        .filter(|c| *c <= STEP_MAX)
                        .ok_or_else(|| D::Error::custom(STEP_TOO_LONG))?;
                    if n > 0 {
                        TextStep::Retain(count)
                    } else {
                        TextStep::Delete(count)
                    }
                }
                Raw::Text(text) if text.is_empty() => {
                    return Err(D::Error::custom("a text edit must not insert \"\""));
                }
                Raw::Text(text) => TextStep::Insert(text),
            };
            let (base, target) = (edit.base_len, edit.target_len);
            let grows = match &step {
                TextStep::Retain(n) => base.checked_add(*n).and(target.checked_add(*n)),
                TextStep::Delete(n) => base.checked_add(*n),
                TextStep::Insert(text) => target.checked_add(char_len(text)),
            };
            if grows.is_none() {
                return Err(D::Error::custom("a text edit is too long"));
            }
            edit.push(step);
        }
        Ok(edit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn edit(json: &str) -> TextEdit {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn wire_format_round_trips_and_normalizes() {
        let e = edit(r#"[2, -1, "ab", 1, 1]"#);
        // The insert moves before the delete it touches; neighbouring retains merge.
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"[2,"ab",-1,2]"#);
        assert_eq!((e.base_len(), e.target_len()), (5, 6));
        for bad in [r#"[0]"#, r#"[""]"#, r#"[1.5]"#, r#"{"a":1}"#, r#"[true]"#] {
            assert!(serde_json::from_str::<TextEdit>(bad).is_err(), "{bad}");
        }
        let huge = format!("[{}]", STEP_MAX + 1);
        assert!(serde_json::from_str::<TextEdit>(&huge).is_err());
        assert!(serde_json::from_str::<TextEdit>(&format!("[{}]", i64::MIN)).is_err());
    }

    /// Each row: text, edit, what it makes of the text (or the length error).
    #[test]
    fn apply_table() {
        let rows: &[(&str, &str, Result<&str, LengthMismatch>)] = &[
            ("hello", r#"[5, " world"]"#, Ok("hello world")),
            ("hello", r#"["oh, ", 5]"#, Ok("oh, hello")),
            ("hello", r#"[1, -3, 1]"#, Ok("ho")),
            ("héllo ✓", r#"[1, "e", -1, 5]"#, Ok("hello ✓")),
            (
                "hello",
                r#"[4]"#,
                Err(LengthMismatch {
                    expected: 4,
                    found: 5,
                }),
            ),
            ("", r#"[]"#, Ok("")),
        ];
        for (text, e, expected) in rows {
            let got = edit(e).apply(text);
            assert_eq!(
                got.as_deref(),
                expected.as_ref().map(|s| *s),
                "{text:?} {e}"
            );
        }
    }

    #[test]
    fn diff_replaces_only_the_middle() {
        let rows = [
            ("hello", "hello world", r#"[5," world"]"#),
            ("hello world", "hello", r#"[5,-6]"#),
            ("abc", "abc", r#"[3]"#),
            ("aaa", "aaaa", r#"[3,"a"]"#),
            ("colour ✓", "color ✓", r#"[4,-1,3]"#),
            ("", "x", r#"["x"]"#),
        ];
        for (old, new, expected) in rows {
            let d = TextEdit::diff(old, new);
            assert_eq!(d.to_string(), expected, "{old:?} → {new:?}");
            assert_eq!(d.apply(old).unwrap(), new);
        }
    }

    #[test]
    fn equal_position_inserts_put_the_landed_text_first() {
        let base = "ab";
        let landed = edit(r#"[1, "X", 1]"#);
        let mine = edit(r#"[1, "Y", 1]"#);
        let (mine2, landed2) = mine.transform(&landed).unwrap();
        let server = mine2.apply(&landed.apply(base).unwrap()).unwrap();
        let client = landed2.apply(&mine.apply(base).unwrap()).unwrap();
        assert_eq!(server, "aXYb");
        assert_eq!(client, server);
    }

    /// Each row: edit, where its author's caret is after it.
    #[test]
    fn the_authors_caret_is_after_the_last_change() {
        let rows: &[(&str, Option<usize>)] = &[
            (r#"[5, " world"]"#, Some(11)),
            (r#"["oh, ", 5]"#, Some(4)),
            (r#"[1, -3, 1]"#, Some(1)),
            (r#"[1, "e", -1, 5]"#, Some(2)),
            (r#"["a", 2, -1, 1]"#, Some(3)),
            (r#"[2, "XY", 1, "Z", 3]"#, Some(6)),
            (r#"[4]"#, None),
            (r#"[]"#, None),
        ];
        for (e, caret) in rows {
            assert_eq!(edit(e).caret_after(), *caret, "{e}");
        }
    }

    #[test]
    fn carets_follow_other_peoples_edits() {
        let e = edit(r#"[2, "XY", -2, 3]"#); // "abcdefg" → "abXYefg"
        let rows = [
            (0, 0),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 4),
            (5, 5),
            (7, 7),
            (99, 7),
        ];
        for (before, after) in rows {
            assert_eq!(e.transform_index(before), after, "caret at {before}");
        }
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('é'), Just('✓')],
            0..12,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    /// A random edit of a text of `len` characters.
    fn edit_of(len: usize) -> impl Strategy<Value = TextEdit> {
        proptest::collection::vec((0..3u8, 0..4usize, text()), 0..6).prop_map(move |parts| {
            let mut e = TextEdit::new();
            let mut left = len;
            for (kind, n, ins) in parts {
                match kind {
                    0 => {
                        let k = n.min(left);
                        e.retain(k);
                        left -= k;
                    }
                    1 => {
                        let k = n.min(left);
                        e.delete(k);
                        left -= k;
                    }
                    _ => {
                        e.insert(&ins);
                    }
                }
            }
            e.retain(left);
            e
        })
    }

    fn text_and_two_edits() -> impl Strategy<Value = (String, TextEdit, TextEdit)> {
        text().prop_flat_map(|t| {
            let n = t.chars().count();
            (Just(t), edit_of(n), edit_of(n))
        })
    }

    proptest! {
        #[test]
        fn transform_converges((base, a, b) in text_and_two_edits()) {
            let (a2, b2) = a.transform(&b).unwrap();
            let via_b = a2.apply(&b.apply(&base).unwrap()).unwrap();
            let via_a = b2.apply(&a.apply(&base).unwrap()).unwrap();
            prop_assert_eq!(via_a, via_b);
        }

        #[test]
        fn compose_equals_applying_in_turn((base, a, b) in text_and_two_edits()) {
            let after_a = a.apply(&base).unwrap();
            let b = TextEdit::diff(&after_a, &b.apply(&base).unwrap());
            let composed = a.compose(&b).unwrap();
            prop_assert_eq!(composed.apply(&base).unwrap(), b.apply(&after_a).unwrap());
        }

        #[test]
        fn wire_format_round_trips((base, a, _b) in text_and_two_edits()) {
            let back: TextEdit = serde_json::from_str(&a.to_string()).unwrap();
            prop_assert_eq!(back.apply(&base).unwrap(), a.apply(&base).unwrap());
            prop_assert_eq!(back, a);
        }
    }
}
