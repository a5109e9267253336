//! Any JSON object as a config write (merge or replace) on any starting section: checking it
//! never panics, and what the write makes respects every limit — the patch may be small and
//! still make the section too large, which must be refused, not stored.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rally_app::model::limits::{CONFIG_MAX_DEPTH, CONFIG_SECTION_MAX_BYTES};
use rally_app::model::{
    json_depth, Actor, CampaignId, CampaignState, CampaignStatus, ConfigChange, ConfigMode,
    SectionName, Timestamp, UserId, Write,
};
use serde_json::{Map, Value};

// Input: the section as it is, a line break, the patch; `replace` anywhere after a second line
// break replaces instead of merging.
fuzz_target!(|input: &str| {
    let mut lines = input.splitn(3, '\n');
    let (Some(start), Some(patch)) = (lines.next(), lines.next()) else {
        return;
    };
    let replace = lines.next().is_some_and(|mode| mode.contains("replace"));
    let (Ok(start), Ok(patch)) = (
        serde_json::from_str::<Map<String, Value>>(start),
        serde_json::from_str::<Map<String, Value>>(patch),
    ) else {
        return;
    };
    let section = SectionName::parse("ui_content").unwrap();
    let actor = Actor {
        user_id: UserId::parse("u1").unwrap(),
        display_name: "Fuzz".into(),
    };
    let mut state = CampaignState {
        id: CampaignId::parse("c").unwrap(),
        title: "T".into(),
        description: String::new(),
        status: CampaignStatus::Draft,
        visibility: rally_app::model::Visibility::Private,
        features: Default::default(),
        config: [(section.clone(), start)].into(),
        handed_to: None,
        members: Default::default(),
        version: 1,
        created_at: Timestamp::from_unix_nanos(1),
        created_by: actor.clone(),
        updated_at: Timestamp::from_unix_nanos(1),
        updated_by: actor,
    };
    let write = Write::Config(ConfigChange {
        campaign_id: state.id.clone(),
        section: section.clone(),
        values: patch,
        mode: if replace {
            ConfigMode::Replace
        } else {
            ConfigMode::Merge
        },
        base_version: None,
    });
    if let Ok(Some(change)) = write.effect(&state) {
        state.apply_change(&change).expect("an effect applies");
        let result = &state.config[&section];
        let bytes = serde_json::to_vec(result).unwrap().len();
        assert!(bytes <= CONFIG_SECTION_MAX_BYTES, "{bytes} bytes stored");
        let depth = 1 + result.values().map(json_depth).max().unwrap_or(0);
        assert!(depth <= CONFIG_MAX_DEPTH, "depth {depth} stored");
    }
});
