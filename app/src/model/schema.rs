//! JSON Schemas of the types that validate themselves (ids, names, times, text edits), for the
//! server's OpenAPI document. Each states, as a pattern, the rule its type's `parse` enforces;
//! the server's tests hold every pattern against `parse` on the same inputs.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::limits::{DISPLAY_NAME_MAX_CHARS, FEATURE_NAME_MAX, SECTION_NAME_MAX};
use super::{
    CampaignId, ContentField, DisplayName, EditId, EventId, Feature, IdempotencyKey, InviteId,
    SectionName, TextEdit, Timestamp, UserId, MAX_CAMPAIGN_ID_LEN, MAX_INVITE_ID_LEN,
};

/// `impl JsonSchema` for a type written as one JSON value: its name and its schema.
macro_rules! schema_of {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

/// Characters that are not control characters (`char::is_control`: Unicode's Cc).
const NOT_CONTROL: &str = r"[^\x00-\x1f\x7f-\x9f]";

schema_of!(
    CampaignId,
    "CampaignId",
    json_schema!({
        "type": "string",
        "pattern": format!("^[a-z0-9-]{{1,{MAX_CAMPAIGN_ID_LEN}}}$"),
        "description": "1 to 63 lowercase letters, digits and '-'",
        "examples": ["spring"],
    })
);
schema_of!(
    UserId,
    "UserId",
    json_schema!({
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]{1,40}$",
    })
);
schema_of!(
    EditId,
    "EditId",
    json_schema!({
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]{1,40}$",
        "description": "Names one text edit, so a resent edit applies once",
    })
);
schema_of!(
    IdempotencyKey,
    "IdempotencyKey",
    json_schema!({
        "type": "string",
        "pattern": "^[A-Za-z0-9_.:-]{1,64}$",
    })
);
schema_of!(
    InviteId,
    "InviteId",
    json_schema!({
        "type": "string",
        "pattern": format!("^[0-9a-f]{{1,{MAX_INVITE_ID_LEN}}}$"),
    })
);
schema_of!(
    Feature,
    "Feature",
    json_schema!({
        "type": "string",
        "pattern": format!("^[a-z0-9][a-z0-9_-]{{0,{}}}$", FEATURE_NAME_MAX - 1),
    })
);
schema_of!(
    SectionName,
    "SectionName",
    json_schema!({
        "type": "string",
        "pattern": format!("^[a-z][a-z0-9_]{{0,{}}}$", SECTION_NAME_MAX - 1),
    })
);
schema_of!(
    ContentField,
    "ContentField",
    json_schema!({
        "type": "string",
        "pattern": format!(
            "^(title|description|status|features|config\\.[a-z][a-z0-9_]{{0,{}}})$",
            SECTION_NAME_MAX - 1
        ),
        "description": "title, description, status, features or config.<section>",
    })
);
schema_of!(
    DisplayName,
    "DisplayName",
    json_schema!({
        "type": "string",
        "pattern": format!(r"^\s*{NOT_CONTROL}{{0,{}}}[^\s\x00-\x1f\x7f-\x9f]\s*$", DISPLAY_NAME_MAX_CHARS - 1),
        "description": "1 to 40 characters after trimming, no control characters",
    })
);
schema_of!(
    EventId,
    "EventId",
    json_schema!({
        "type": "string",
        "pattern": "^[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{8}$",
    })
);
schema_of!(
    Timestamp,
    "Timestamp",
    json_schema!({
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339, UTC, nanoseconds: 2026-11-27T11:08:49.123456789Z",
    })
);
schema_of!(
    TextEdit,
    "TextEdit",
    json_schema!({
        "type": "array",
        "description": "Steps over the text: n > 0 keeps n characters, a string inserts it, n < 0 deletes -n characters",
        "items": {
            "anyOf": [
                {"type": "integer", "not": {"const": 0}},
                {"type": "string"},
            ],
        },
    })
);
