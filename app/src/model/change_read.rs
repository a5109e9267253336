//! Reading a [`Change`] in one pass.
//!
//! A change is internally tagged: `{"kind": "fields", "updates": {…}}`. serde's derive reads such
//! an enum by buffering the whole object into its private `Content` tree, finding `kind` in it,
//! and then reading the variant from that tree — a second decoder for every type a change holds,
//! compiled into the server and into the browser's WebAssembly beside the decoder from text
//! (BENCHMARKS.md, "One pass for tagged changes").
//!
//! No two kinds share a field name, so one struct with every kind's fields as options reads any
//! change in one pass, whatever the order of its keys; the kind then says which of them must be
//! there. Serialization and the JSON schema stay derived, so the wire format does not move.
//! Fields that belong to another kind are read (and must have their type) but not kept, where
//! the derive would skip them unread.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::campaign::{Actor, CampaignState, Change, ConfigMode, Feature, FieldUpdates};
use super::campaign::{SectionName, TextField};
use super::{EditId, InviteId, InviteTerms, Restored, Role, TextEdit};

/// `field`'s value, or serde's own "missing field" error.
pub(crate) fn required<T, E: serde::de::Error>(
    value: Option<T>,
    field: &'static str,
) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(field))
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Created,
    Fields,
    Features,
    Config,
    Text,
    Member,
    Handover,
    Invite,
    InviteWithdrawn,
    Revert,
}

/// Every kind's fields. An `Option` reads a missing key and `null` alike, so a required field
/// sent as `null` is reported missing (the derive said "invalid type: null").
#[derive(Deserialize)]
#[serde(expecting = "a change: an object with a \"kind\"")]
struct AnyChange {
    kind: Kind,
    state: Option<Box<CampaignState>>,
    updates: Option<FieldUpdates>,
    added: Option<Vec<Feature>>,
    removed: Option<Vec<Feature>>,
    section: Option<SectionName>,
    mode: Option<ConfigMode>,
    values: Option<Map<String, Value>>,
    field: Option<TextField>,
    edit: Option<TextEdit>,
    edit_id: Option<EditId>,
    member: Option<Actor>,
    role: Option<Role>,
    invite: Option<InviteId>,
    from: Option<Actor>,
    to: Option<Actor>,
    terms: Option<InviteTerms>,
    id: Option<InviteId>,
    to_version: Option<u64>,
    restored: Option<Restored>,
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let c = AnyChange::deserialize(deserializer)?;
        Ok(match c.kind {
            Kind::Created => Change::Created {
                state: required(c.state, "state")?,
            },
            Kind::Fields => Change::Fields {
                updates: required(c.updates, "updates")?,
            },
            Kind::Features => Change::Features {
                added: required(c.added, "added")?,
                removed: required(c.removed, "removed")?,
            },
            Kind::Config => Change::Config {
                section: required(c.section, "section")?,
                mode: required(c.mode, "mode")?,
                values: required(c.values, "values")?,
            },
            Kind::Text => Change::Text {
                field: required(c.field, "field")?,
                edit: required(c.edit, "edit")?,
                edit_id: required(c.edit_id, "edit_id")?,
            },
            Kind::Member => Change::Member {
                member: required(c.member, "member")?,
                role: c.role,
                invite: c.invite,
            },
            Kind::Handover => Change::Handover {
                from: required(c.from, "from")?,
                to: required(c.to, "to")?,
            },
            Kind::Invite => Change::Invite {
                terms: required(c.terms, "terms")?,
            },
            Kind::InviteWithdrawn => Change::InviteWithdrawn {
                id: required(c.id, "id")?,
            },
            Kind::Revert => Change::Revert {
                to_version: required(c.to_version, "to_version")?,
                restored: required(c.restored, "restored")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{CampaignId, CampaignStatus, Timestamp, UserId, Visibility};

    fn actor(id: &str) -> Value {
        json!({"user_id": id, "display_name": id.to_uppercase()})
    }

    fn state() -> Value {
        let at = Timestamp::from_unix_nanos(1);
        let ada = Actor {
            user_id: UserId::parse("ada").unwrap(),
            display_name: "Ada".into(),
        };
        serde_json::to_value(CampaignState {
            id: CampaignId::parse("spring").unwrap(),
            title: "Spring".into(),
            description: "Soon".into(),
            status: CampaignStatus::Draft,
            visibility: Visibility::Private,
            features: [Feature::parse("chat").unwrap()].into(),
            config: [(SectionName::parse("ui_content").unwrap(), Map::new())].into(),
            members: Default::default(),
            handed_to: None,
            version: 1,
            created_at: at,
            created_by: ada.clone(),
            updated_at: at,
            updated_by: ada,
        })
        .unwrap()
    }

    /// One change of every kind, as the derived `Serialize` writes it.
    fn every_kind() -> Vec<Value> {
        vec![
            json!({"kind": "created", "state": state()}),
            json!({"kind": "fields", "updates": {"title": "Summer", "status": "active"}}),
            json!({"kind": "features", "added": ["chat"], "removed": ["polls", "raffle"]}),
            json!({"kind": "config", "section": "ui_content", "mode": "replace", "values": {"hero": {"a": [1, null]}}}),
            json!({"kind": "text", "field": "description", "edit": [3, "big ", -2], "edit_id": "e-1"}),
            json!({"kind": "member", "member": actor("bob"), "role": "editor", "invite": "0af3"}),
            json!({"kind": "member", "member": actor("bob"), "role": null}),
            json!({"kind": "handover", "from": actor("ada"), "to": actor("bob")}),
            json!({"kind": "invite", "terms": {"id": "0af3", "role": "viewer", "max_uses": 5, "expires_at": "2026-12-01T00:00:00.000000000Z"}}),
            json!({"kind": "invite_withdrawn", "id": "0af3"}),
            json!({"kind": "revert", "to_version": 4, "restored": {"title": "Spring", "config": {"ui_content": null}}}),
        ]
    }

    /// `wire` as text with `kind` written last: the derive's buffering never depended on where
    /// the tag is, and neither may this.
    fn kind_last(wire: &Value) -> String {
        let mut object = wire.as_object().unwrap().clone();
        let kind = object.remove("kind").unwrap();
        let rest = serde_json::to_string(&object).unwrap();
        format!("{},\"kind\":{kind}}}", &rest[..rest.len() - 1])
    }

    #[test]
    fn every_kind_reads_back_what_was_written_from_text_and_from_a_value() {
        for wire in every_kind() {
            let from_text: Change = serde_json::from_str(&wire.to_string()).unwrap();
            assert_eq!(serde_json::to_value(&from_text).unwrap(), wire, "from text");
            let tag_last: Change = serde_json::from_str(&kind_last(&wire)).unwrap();
            assert_eq!(
                tag_last,
                from_text,
                "kind written last: {}",
                kind_last(&wire)
            );
            let from_value: Change = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(from_value, from_text, "from a serde_json::Value");
        }
    }

    #[test]
    fn a_member_change_without_a_role_removes_them() {
        let change: Change =
            serde_json::from_value(json!({"kind": "member", "member": actor("bob")})).unwrap();
        assert!(matches!(
            change,
            Change::Member {
                role: None,
                invite: None,
                ..
            }
        ));
    }

    #[test]
    fn bad_changes_are_refused_with_what_is_wrong() {
        let cases = [
            (json!({"updates": {"title": "x"}}), "missing field `kind`"),
            (json!({"kind": "fields"}), "missing field `updates`"),
            (
                json!({"kind": "features", "added": []}),
                "missing field `removed`",
            ),
            (
                json!({"kind": "handover", "from": actor("a"), "to": null}),
                "missing field `to`",
            ),
            (
                json!({"kind": "fields", "updates": {"title": 3}}),
                "invalid type: integer `3`",
            ),
            (json!({"kind": "moved"}), "unknown variant `moved`"),
            (
                json!("fields"),
                "invalid type: string \"fields\", expected a change",
            ),
        ];
        for (wire, expected) in cases {
            let error = serde_json::from_str::<Change>(&wire.to_string()).unwrap_err();
            assert!(error.to_string().contains(expected), "{wire}: {error}");
        }
    }
}
