//! One text field (title or description) that several people type into at once: a pure state
//! machine, the client half of [`crate::model::TextEdit`]'s operational transformation.
//!
//! The rules:
//! - What the person types is never replaced. [`SharedText::typed`] records it as an edit of the
//!   text on screen; someone else's edit is transformed over what this page has not had
//!   confirmed yet and applied around it ([`SharedText::received`] returns that edit, so the
//!   caret can follow it).
//! - At most one edit is on its way. Whatever is typed meanwhile waits, composed into one edit,
//!   and goes out ([`SharedText::take_outgoing`]) once the one on its way has come back in the
//!   confirmed stream — recognised by its `edit_id` — so every edit is based on a version whose
//!   text this page knows exactly. The server transforms it over whatever landed since.
//! - Text the server would refuse (too long, control characters) is not sent; the field keeps it
//!   and says why ([`Hold::Invalid`]) until it is fixed.
//! - When the whole field is replaced under unsent typing (a `campaign:update` from elsewhere, a
//!   snapshot) or the server refuses an edit, the typed text stays on screen and stops syncing
//!   ([`Hold::Diverged`]) until the person keeps theirs ([`SharedText::keep_mine`]: sent as an
//!   edit of the saved text) or takes the saved one ([`SharedText::use_saved`]).
//! - Where other people type is kept as a caret per person ([`SharedText::carets`]): set just
//!   after each of their edits, moved by every later change of the text on screen, forgotten when
//!   the page stops showing it ([`SharedText::forget_caret`]) or the field is replaced wholesale.

use std::collections::BTreeMap;

use crate::model::{check_text, Change, EditId, TextChange, TextEdit, TextField};
use crate::model::{CampaignId, LengthMismatch};

/// Why a field's text is not being saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The server would refuse this text; the message says why.
    Invalid(String),
    /// The saved text changed in a way typing cannot merge with (or an edit was refused): the
    /// person decides. `saved` is the text everyone else sees now.
    Diverged { saved: String, reason: String },
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedText {
    field: TextField,
    /// The field's text at the confirmed version.
    confirmed: String,
    /// Sent, not yet back in the confirmed stream; made on `confirmed`.
    in_flight: Option<(EditId, TextEdit)>,
    /// Typed since; made on `confirmed` + `in_flight`.
    unsent: Option<TextEdit>,
    /// What the field shows.
    local: String,
    hold: Option<Hold>,
    /// An edit that was on its way when the field diverged: if it lands, it only moves `confirmed`.
    orphan: Option<EditId>,
    /// Other people's carets in `local`, by display name, in characters.
    carets: BTreeMap<String, usize>,
}

impl SharedText {
    pub fn new(field: TextField, text: &str) -> Self {
        SharedText {
            field,
            confirmed: text.to_owned(),
            in_flight: None,
            unsent: None,
            local: text.to_owned(),
            hold: None,
            orphan: None,
            carets: BTreeMap::new(),
        }
    }

    pub fn field(&self) -> TextField {
        self.field
    }

    /// What the field shows.
    pub fn text(&self) -> &str {
        &self.local
    }

    /// The text everyone sees (at the confirmed version).
    pub fn saved(&self) -> &str {
        &self.confirmed
    }

    pub fn hold(&self) -> Option<&Hold> {
        self.hold.as_ref()
    }

    /// Where other people last typed in the text on screen: (display name, character index).
    pub fn carets(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.carets.iter().map(|(name, at)| (name.as_str(), *at))
    }

    /// Stop showing `name`'s caret (they paused; where their caret is now is not known).
    pub fn forget_caret(&mut self, name: &str) {
        self.carets.remove(name);
    }

    /// The text on screen changed by `edit`: carets move with the text around them.
    fn move_carets(&mut self, edit: &TextEdit) {
        for at in self.carets.values_mut() {
            *at = edit.transform_index(*at);
        }
    }

    /// Typing not yet confirmed by the server (in flight, waiting, or held).
    pub fn has_unsaved(&self) -> bool {
        self.in_flight.is_some() || self.unsent.is_some() || self.local != self.confirmed
    }

    /// The person changed the field to `text`.
    pub fn typed(&mut self, text: &str) {
        if text == self.local {
            return;
        }
        let edit = TextEdit::diff(&self.local, text);
        self.local = text.to_owned();
        self.move_carets(&edit);
        if matches!(self.hold, Some(Hold::Diverged { .. })) {
            return;
        }
        self.unsent = Some(match self.unsent.take() {
            Some(before) => before
                .compose(&edit)
                .expect("typing continues the text on screen"),
            None => edit,
        });
        if matches!(self.hold, Some(Hold::Invalid(_))) {
            self.hold = None; // checked again when it is sent
        }
    }

    /// The edit to send now, if any: typing is waiting, nothing is on its way, nothing is held.
    /// `version` is the confirmed version (the text this page knows exactly); `edit_id` names it.
    pub fn take_outgoing(
        &mut self,
        campaign_id: &CampaignId,
        version: u64,
        edit_id: EditId,
    ) -> Option<TextChange> {
        if self.in_flight.is_some() || self.hold.is_some() {
            return None;
        }
        let edit = self.unsent.take()?;
        if edit.is_noop() {
            return None;
        }
        if let Err(error) = check_text(self.field, &self.local) {
            self.unsent = Some(edit);
            self.hold = Some(Hold::Invalid(error.message));
            return None;
        }
        self.in_flight = Some((edit_id.clone(), edit.clone()));
        Some(TextChange {
            campaign_id: campaign_id.clone(),
            field: self.field,
            edit,
            base_version: version,
            edit_id,
        })
    }

    /// A confirmed change by `by` (a display name) arrived. Returns the edit it made to the text
    /// on screen, if any (for the caret to follow).
    pub fn received(&mut self, change: &Change, by: &str) -> Option<TextEdit> {
        match change {
            Change::Text {
                field,
                edit,
                edit_id,
            } if *field == self.field => {
                let on_screen = self.received_edit(edit, edit_id)?;
                self.move_carets(&on_screen);
                if let Some(at) = on_screen.caret_after() {
                    self.carets.insert(by.to_owned(), at);
                }
                Some(on_screen)
            }
            other => other.replaced_text(self.field).and_then(|text| {
                self.replaced(text, &format!("{by} replaced it while you were typing"))
            }),
        }
    }

    fn received_edit(&mut self, edit: &TextEdit, edit_id: &EditId) -> Option<TextEdit> {
        let Ok(confirmed) = edit.apply(&self.confirmed) else {
            return None; // cannot happen in a gap-free stream; the next snapshot repairs it
        };
        self.confirmed = confirmed;
        if self.orphan.as_ref() == Some(edit_id) {
            self.orphan = None;
            return None;
        }
        if self.in_flight.as_ref().is_some_and(|(id, _)| id == edit_id) {
            self.in_flight = None;
            return None;
        }
        if matches!(self.hold, Some(Hold::Diverged { .. })) {
            self.set_saved_in_hold();
            return None;
        }
        match self.move_over(edit) {
            Ok(on_screen) => {
                self.local = on_screen
                    .apply(&self.local)
                    .expect("transformed edits fit the text on screen");
                if matches!(self.hold, Some(Hold::Invalid(_))) {
                    self.hold = None; // someone else's edit may have made it valid: checked again
                }
                Some(on_screen)
            }
            Err(_) => {
                self.diverge("it changed in a way this page could not follow".into());
                None
            }
        }
    }

    /// Move the local edits over `theirs` (made on `confirmed` before it moved); returns the edit
    /// that applies to the text on screen.
    fn move_over(&mut self, theirs: &TextEdit) -> Result<TextEdit, LengthMismatch> {
        let mut theirs = theirs.clone();
        if let Some((id, mine)) = self.in_flight.take() {
            let (mine, over) = mine.transform(&theirs)?;
            self.in_flight = Some((id, mine));
            theirs = over;
        }
        if let Some(mine) = self.unsent.take() {
            let (mine, over) = mine.transform(&theirs)?;
            self.unsent = Some(mine);
            theirs = over;
        }
        Ok(theirs)
    }

    /// The saved text became `text` wholesale (an update, a snapshot).
    pub fn replaced(&mut self, text: &str, reason: &str) -> Option<TextEdit> {
        self.confirmed = text.to_owned();
        self.carets.clear();
        if !self.has_pending_typing() {
            let edit = TextEdit::diff(&self.local, text);
            self.local = text.to_owned();
            self.hold = None;
            return Some(edit);
        }
        self.diverge(reason.to_owned());
        None
    }

    fn has_pending_typing(&self) -> bool {
        self.in_flight.is_some() || self.unsent.is_some() || self.hold.is_some()
    }

    /// The server accepted edit `edit_id` as changing nothing (the text already was what it
    /// makes): it is done, and no event will bring it back.
    pub fn settled_unchanged(&mut self, edit_id: &EditId) {
        if self.in_flight.as_ref().is_some_and(|(id, _)| id == edit_id) {
            self.in_flight = None;
        }
    }

    /// The server refused edit `edit_id`: keep the text, stop syncing, let the person decide.
    pub fn refused(&mut self, edit_id: &EditId, reason: &str) {
        if self.in_flight.as_ref().is_some_and(|(id, _)| id == edit_id) {
            self.in_flight = None;
            self.diverge(reason.to_owned());
        }
    }

    fn diverge(&mut self, reason: String) {
        if let Some((id, _)) = self.in_flight.take() {
            self.orphan = Some(id);
        }
        self.unsent = None;
        if self.local == self.confirmed {
            self.hold = None;
            return;
        }
        self.hold = Some(Hold::Diverged {
            saved: self.confirmed.clone(),
            reason,
        });
    }

    fn set_saved_in_hold(&mut self) {
        if let Some(Hold::Diverged { saved, .. }) = &mut self.hold {
            saved.clone_from(&self.confirmed);
        }
    }

    /// Keep what is on screen: it goes out as an edit of the saved text.
    pub fn keep_mine(&mut self) {
        if !matches!(self.hold, Some(Hold::Diverged { .. })) {
            return;
        }
        self.hold = None;
        let edit = TextEdit::diff(&self.confirmed, &self.local);
        if self.in_flight.is_none() {
            self.unsent = (!edit.is_noop()).then_some(edit);
        }
    }

    /// Take the saved text. Returns the edit it makes on screen.
    pub fn use_saved(&mut self) -> TextEdit {
        let edit = TextEdit::diff(&self.local, &self.confirmed);
        self.local = self.confirmed.clone();
        self.move_carets(&edit);
        self.unsent = None;
        self.hold = None;
        edit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldUpdates;
    use proptest::prelude::*;

    fn id(n: u32) -> EditId {
        EditId::parse(&format!("e{n}")).unwrap()
    }

    fn campaign() -> CampaignId {
        CampaignId::parse("c").unwrap()
    }

    fn text_change(change: &TextChange) -> Change {
        Change::Text {
            field: change.field,
            edit: change.edit.clone(),
            edit_id: change.edit_id.clone(),
        }
    }

    #[test]
    fn typing_survives_someone_elses_edit_and_the_caret_follows() {
        let mut t = SharedText::new(TextField::Description, "hello world");
        t.typed("hello brave world"); // not sent yet
                                      // Someone appends "!" to the saved text.
        let theirs: TextEdit = serde_json::from_str(r#"[11, "!"]"#).unwrap();
        let on_screen = t
            .received(
                &Change::Text {
                    field: TextField::Description,
                    edit: theirs,
                    edit_id: id(99),
                },
                "Ada",
            )
            .unwrap();
        assert_eq!(t.text(), "hello brave world!");
        assert_eq!(t.saved(), "hello world!");
        assert_eq!(
            on_screen.transform_index(17),
            17,
            "caret at the end of the typed text stays"
        );
        // What goes out is only the typing, based on the version that includes "!".
        let out = t.take_outgoing(&campaign(), 8, id(1)).unwrap();
        assert_eq!(out.base_version, 8);
        assert_eq!(
            out.edit.apply("hello world!").unwrap(),
            "hello brave world!"
        );
    }

    #[test]
    fn other_peoples_carets_sit_after_their_typing_and_move_with_the_text() {
        let text_edit = |json: &str, n: u32| Change::Text {
            field: TextField::Description,
            edit: serde_json::from_str(json).unwrap(),
            edit_id: id(n),
        };
        let carets = |t: &SharedText| -> Vec<(String, usize)> {
            t.carets().map(|(n, at)| (n.to_owned(), at)).collect()
        };
        let mut t = SharedText::new(TextField::Description, "hello world");
        t.received(&text_edit(r#"[6, "big ", 5]"#, 90), "Ada");
        assert_eq!(t.text(), "hello big world");
        assert_eq!(carets(&t), [("Ada".to_owned(), 10)]);
        t.typed("Oh, hello big world"); // the person here types before Ada's caret
        assert_eq!(carets(&t), [("Ada".to_owned(), 14)]);
        // Bob's edit is made on the saved text (without "Oh, "); on screen it lands after it.
        t.received(&text_edit(r#"[15, "!"]"#, 91), "Bob");
        assert_eq!(t.text(), "Oh, hello big world!");
        assert_eq!(carets(&t), [("Ada".to_owned(), 14), ("Bob".to_owned(), 20)]);
        // Ada deletes "big ": her caret is where the text was.
        t.received(&text_edit(r#"[6, -4, 6]"#, 92), "Ada");
        assert_eq!(t.text(), "Oh, hello world!");
        assert_eq!(carets(&t), [("Ada".to_owned(), 10), ("Bob".to_owned(), 16)]);
        t.forget_caret("Bob");
        assert_eq!(carets(&t), [("Ada".to_owned(), 10)]);
        // A wholesale replacement leaves no caret anyone could place.
        let update = Change::Fields {
            updates: FieldUpdates {
                description: Some("new".into()),
                ..Default::default()
            },
        };
        t.received(&update, "Cy");
        assert_eq!(carets(&t), []);
    }

    #[test]
    fn one_edit_in_flight_the_rest_waits_composed() {
        let mut t = SharedText::new(TextField::Title, "ab");
        t.typed("abc");
        let first = t.take_outgoing(&campaign(), 3, id(1)).unwrap();
        t.typed("abcd");
        t.typed("abcde");
        assert_eq!(
            t.take_outgoing(&campaign(), 3, id(2)),
            None,
            "one on its way"
        );
        // Its own edit comes back: the next goes out, made on the text that includes it.
        assert_eq!(t.received(&text_change(&first), "Ada"), None);
        let second = t.take_outgoing(&campaign(), 4, id(2)).unwrap();
        assert_eq!(second.edit.apply("abc").unwrap(), "abcde");
        assert_eq!(t.received(&text_change(&second), "Ada"), None);
        assert!(!t.has_unsaved());
    }

    #[test]
    fn text_the_server_would_refuse_is_held_not_sent() {
        let mut t = SharedText::new(TextField::Title, "ok");
        t.typed(&"x".repeat(201));
        assert_eq!(t.take_outgoing(&campaign(), 1, id(1)), None);
        assert!(matches!(t.hold(), Some(Hold::Invalid(m)) if m.contains("200")));
        assert_eq!(t.text().len(), 201, "the text stays");
        t.typed("fixed");
        let out = t.take_outgoing(&campaign(), 1, id(1)).unwrap();
        assert_eq!(out.edit.apply("ok").unwrap(), "fixed");
    }

    #[test]
    fn a_held_text_made_valid_by_someone_else_is_sent() {
        let mut t = SharedText::new(TextField::Title, "ok");
        t.typed(""); // an empty title is refused: held, not sent
        assert_eq!(t.take_outgoing(&campaign(), 1, id(1)), None);
        assert!(matches!(t.hold(), Some(Hold::Invalid(_))));
        // Someone else types into the title meanwhile: "ok" becomes "okay".
        let theirs: TextEdit = serde_json::from_str(r#"[2, "ay"]"#).unwrap();
        let change = Change::Text {
            field: TextField::Title,
            edit: theirs,
            edit_id: id(99),
        };
        t.received(&change, "Bob");
        assert_eq!(t.text(), "ay", "their text next to the emptied one");
        let out = t
            .take_outgoing(&campaign(), 2, id(2))
            .expect("valid again: sent");
        assert_eq!(out.edit.apply("okay").unwrap(), "ay");
    }

    #[test]
    fn a_replacement_under_typing_diverges_until_the_person_decides() {
        let mut t = SharedText::new(TextField::Title, "Spring");
        t.typed("Spring sale");
        let set = Change::Fields {
            updates: FieldUpdates {
                title: Some("Autumn".into()),
                ..Default::default()
            },
        };
        assert_eq!(t.received(&set, "Ada"), None);
        assert_eq!(t.text(), "Spring sale");
        assert!(matches!(t.hold(), Some(Hold::Diverged { saved, .. }) if saved == "Autumn"));
        assert_eq!(
            t.take_outgoing(&campaign(), 5, id(1)),
            None,
            "nothing syncs while held"
        );
        t.keep_mine();
        let out = t.take_outgoing(&campaign(), 5, id(1)).unwrap();
        assert_eq!(out.edit.apply("Autumn").unwrap(), "Spring sale");

        let mut u = SharedText::new(TextField::Title, "Spring");
        u.typed("Spring sale");
        u.received(&set, "Ada");
        let edit = u.use_saved();
        assert_eq!(u.text(), "Autumn");
        assert_eq!(edit.apply("Spring sale").unwrap(), "Autumn");
        assert!(!u.has_unsaved());
    }

    #[test]
    fn a_replacement_with_nothing_typed_just_shows() {
        let mut t = SharedText::new(TextField::Title, "Spring");
        let set = Change::Fields {
            updates: FieldUpdates {
                title: Some("Autumn".into()),
                ..Default::default()
            },
        };
        let edit = t.received(&set, "Ada").unwrap();
        assert_eq!(t.text(), "Autumn");
        assert_eq!(edit.apply("Spring").unwrap(), "Autumn");
    }

    #[test]
    fn a_refused_edit_keeps_the_text_and_an_orphan_landing_later_moves_only_the_saved_text() {
        let mut t = SharedText::new(TextField::Title, "a");
        t.typed("ab");
        let out = t.take_outgoing(&campaign(), 1, id(1)).unwrap();
        t.refused(&id(1), "no");
        assert_eq!(t.text(), "ab");
        assert!(matches!(t.hold(), Some(Hold::Diverged { .. })));
        t.keep_mine();
        let again = t.take_outgoing(&campaign(), 1, id(2)).unwrap();
        assert_eq!(again.edit.apply("a").unwrap(), "ab");
        let _ = out;
    }

    /// The server, as the core runs it: each edit moved over what landed since its base.
    struct Server {
        text: String,
        log: Vec<Change>,
    }

    impl Server {
        fn land(&mut self, change: &TextChange) -> Change {
            let since = &self.log[change.base_version as usize..];
            let edit = change.rebase(since.iter()).unwrap();
            self.text = edit.apply(&self.text).unwrap();
            let landed = Change::Text {
                field: change.field,
                edit,
                edit_id: change.edit_id.clone(),
            };
            self.log.push(landed.clone());
            landed
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Client n types `text` at a position (a fraction of its text's length).
        Type(usize, f64, String),
        /// Client n deletes up to 3 characters at a position.
        Delete(usize, f64),
        /// Client n sends what it can.
        Send(usize),
        /// The server lands the oldest edit in flight.
        Land,
        /// Client n receives the next landed change.
        Deliver(usize),
    }

    fn steps(clients: usize) -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            (0..clients, 0.0..1.0f64, "[a-cé✓ ]{1,3}").prop_map(|(c, at, s)| Step::Type(c, at, s)),
            (0..clients, 0.0..1.0f64).prop_map(|(c, at)| Step::Delete(c, at)),
            (0..clients).prop_map(Step::Send),
            Just(Step::Land),
            (0..clients).prop_map(Step::Deliver),
        ];
        proptest::collection::vec(step, 0..80)
    }

    fn char_at(text: &str, fraction: f64) -> usize {
        (text.chars().count() as f64 * fraction) as usize
    }

    fn splice(text: &str, at: usize, delete: usize, insert: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let end = (at + delete).min(chars.len());
        chars[..at]
            .iter()
            .chain(insert.chars().collect::<Vec<_>>().iter())
            .chain(chars[end..].iter())
            .collect()
    }

    fn converge(clients: usize, script: Vec<Step>) -> Result<(), TestCaseError> {
        let start = "shared text";
        let mut server = Server {
            text: start.into(),
            log: Vec::new(),
        };
        let mut pages: Vec<SharedText> = (0..clients)
            .map(|_| SharedText::new(TextField::Description, start))
            .collect();
        let mut delivered = vec![0usize; clients];
        let mut queue: std::collections::VecDeque<TextChange> = Default::default();
        let mut next_id = 0;
        let mut send = |page: &mut SharedText,
                        version: usize,
                        queue: &mut std::collections::VecDeque<TextChange>| {
            next_id += 1;
            if let Some(out) = page.take_outgoing(&campaign(), version as u64, id(next_id)) {
                queue.push_back(out);
            }
        };
        for step in script {
            match step {
                Step::Type(c, at, s) => {
                    let text = pages[c].text().to_owned();
                    let next = splice(&text, char_at(&text, at), 0, &s);
                    if next.chars().count() < 200 {
                        pages[c].typed(&next);
                    }
                }
                Step::Delete(c, at) => {
                    let text = pages[c].text().to_owned();
                    pages[c].typed(&splice(&text, char_at(&text, at), 3, ""));
                }
                Step::Send(c) => send(&mut pages[c], delivered[c], &mut queue),
                Step::Land => {
                    if let Some(change) = queue.pop_front() {
                        server.land(&change);
                    }
                }
                Step::Deliver(c) => {
                    if let Some(change) = server.log.get(delivered[c]) {
                        pages[c].received(change, "Ada");
                        delivered[c] += 1;
                    }
                }
            }
        }
        // Quiesce: everyone sends, the server lands, everyone catches up, until nothing moves.
        for _ in 0..clients * 4 + 4 {
            for c in 0..clients {
                while let Some(change) = server.log.get(delivered[c]) {
                    pages[c].received(change, "Ada");
                    delivered[c] += 1;
                }
                send(&mut pages[c], delivered[c], &mut queue);
            }
            while let Some(change) = queue.pop_front() {
                server.land(&change);
            }
        }
        for c in 0..clients {
            while let Some(change) = server.log.get(delivered[c]) {
                pages[c].received(change, "Ada");
                delivered[c] += 1;
            }
        }
        for page in &pages {
            prop_assert_eq!(page.text(), server.text.as_str());
            prop_assert!(!page.has_unsaved());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random concurrent typing by 2–5 people converges to one text, the server's, on every page.
        #[test]
        fn concurrent_typing_converges(clients in 2..=5usize, script in steps(5)) {
            let script = script
                .into_iter()
                .map(|s| match s {
                    Step::Type(c, a, t) => Step::Type(c % clients, a, t),
                    Step::Delete(c, a) => Step::Delete(c % clients, a),
                    Step::Send(c) => Step::Send(c % clients),
                    Step::Deliver(c) => Step::Deliver(c % clients),
                    Step::Land => Step::Land,
                })
                .collect();
            converge(clients, script)?;
        }
    }
}
