//! What differs between two versions of a campaign, field by field, pure. Text fields also come
//! as a word diff, so a reader sees which words changed in a long description.

use std::collections::BTreeSet;

use rally_app::model::{CampaignState, SectionName};
use rally_app::protocol::history::{FieldDiff, TextPiece, TextPieceKind, VersionDiff};
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

/// The fields that differ from `from` to `to`: title, description, status, visibility,
/// features, then config sections by name.
pub fn between(from: &CampaignState, to: &CampaignState) -> VersionDiff {
    let mut fields = Vec::new();
    for (name, before, after) in [
        ("title", &from.title, &to.title),
        ("description", &from.description, &to.description),
    ] {
        if before != after {
            fields.push(FieldDiff {
                field: name.to_owned(),
                before: Some(Value::from(before.as_str())),
                after: Some(Value::from(after.as_str())),
                text: Some(words(before, after)),
            });
        }
    }
    let mut plain = |name: &str, before: Option<Value>, after: Option<Value>| {
        if before != after {
            fields.push(FieldDiff {
                field: name.to_owned(),
                before,
                after,
                text: None,
            });
        }
    };
    plain("status", json(&from.status), json(&to.status));
    plain("visibility", json(&from.visibility), json(&to.visibility));
    plain("features", json(&from.features), json(&to.features));
    let sections: BTreeSet<&SectionName> = from.config.keys().chain(to.config.keys()).collect();
    for section in sections {
        let value = |state: &CampaignState| {
            state
                .config
                .get(section)
                .map(|values| Value::Object(values.clone()))
        };
        plain(&format!("config.{section}"), value(from), value(to));
    }
    VersionDiff {
        campaign_id: to.id.clone(),
        from: from.version,
        to: to.version,
        fields,
    }
}

/// `before` → `after` as runs of kept, removed and added words (whitespace stays with its word).
fn words(before: &str, after: &str) -> Vec<TextPiece> {
    let mut pieces: Vec<TextPiece> = Vec::new();
    for change in TextDiff::from_words(before, after).iter_all_changes() {
        let kind = match change.tag() {
            ChangeTag::Equal => TextPieceKind::Kept,
            ChangeTag::Delete => TextPieceKind::Removed,
            ChangeTag::Insert => TextPieceKind::Added,
        };
        match pieces.last_mut() {
            Some(last) if last.kind == kind => last.text.push_str(change.value()),
            _ => pieces.push(TextPiece {
                kind,
                text: change.value().to_owned(),
            }),
        }
    }
    pieces
}

fn json(value: &impl serde::Serialize) -> Option<Value> {
    serde_json::to_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(version: u64, title: &str, description: &str, config: Value) -> CampaignState {
        serde_json::from_value(json!({
            "id": "c", "title": title, "description": description, "status": "draft",
            "features": ["chat"], "config": config, "version": version,
            "created_at": "2026-01-01T00:00:00Z",
            "created_by": {"user_id": "a", "display_name": "A"},
            "updated_at": "2026-01-01T00:00:00Z",
            "updated_by": {"user_id": "a", "display_name": "A"}
        }))
        .unwrap()
    }

    #[test]
    fn only_differing_fields_appear_and_text_comes_as_words() {
        let from = state(
            3,
            "Spring",
            "big spring sale",
            json!({"ui_content": {"hero": "a"}, "gone": {"x": 1}}),
        );
        let to = state(
            9,
            "Spring",
            "big summer sale",
            json!({"ui_content": {"hero": "b"}, "new": {"y": 2}}),
        );
        let diff = between(&from, &to);
        let names: Vec<&str> = diff.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            names,
            [
                "description",
                "config.gone",
                "config.new",
                "config.ui_content"
            ]
        );
        let text = diff.fields[0].text.as_ref().unwrap();
        let runs: Vec<(TextPieceKind, &str)> =
            text.iter().map(|p| (p.kind, p.text.as_str())).collect();
        assert_eq!(
            runs,
            [
                (TextPieceKind::Kept, "big "),
                (TextPieceKind::Removed, "spring"),
                (TextPieceKind::Added, "summer"),
                (TextPieceKind::Kept, " sale"),
            ]
        );
        assert_eq!(diff.fields[1].after, None, "a removed section has no after");
        assert_eq!(diff.fields[2].before, None, "a new section has no before");
        assert_eq!((diff.from, diff.to), (3, 9));
        assert!(between(&to, &to).fields.is_empty());
    }
}
