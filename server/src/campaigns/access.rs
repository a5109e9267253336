//! Who may see a campaign and what they may do in it: pure rules over its state and the caller.
//!
//! - A caller's **role** is the higher of the one stored for them (the owner: its creator, or
//!   whoever it was handed over to; members are listed in its state) and the one their credential grants (a backend token's
//!   `campaigns` claim); everyone else is a viewer.
//! - A **member** is the owner, someone with a stored role, or someone whose credential grants a
//!   role on the campaign.
//! - A campaign is **seen** by everyone unless it is `private`; a private one only by its members.
//!   To anyone who cannot see it, a campaign answers exactly as one that does not exist — on the
//!   WebSocket, the HTTP API, pages, listings, presence and media — so its existence leaks nowhere.
//! - A campaign is **listed** (landing page, `GET /api/campaigns`) to everyone when `public`, and
//!   otherwise only to its members: an unlisted campaign is found only through its address.

use rally_app::model::{Actor, CampaignState, Role, UserId, Visibility};

/// Who asks, as a campaign sees them: the person, and the role their credential grants on this
/// campaign, if any (a backend-minted token's `campaigns` claim). The higher of that and the
/// stored role counts; a grant is never stored, so it lasts exactly as long as the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    pub granted: Option<Role>,
}

impl Caller {
    /// Someone whose roles are only the stored ones.
    pub fn person(actor: Actor) -> Caller {
        Caller {
            actor,
            granted: None,
        }
    }
}

/// The caller's role (None: anonymous).
pub fn role(campaign: &CampaignState, caller: Option<&Caller>) -> Role {
    let Some(caller) = caller else {
        return Role::Viewer;
    };
    let stored = stored_role(campaign, Some(&caller.actor.user_id)).unwrap_or(Role::Viewer);
    match caller.granted {
        Some(granted) => stored.max(granted),
        None => stored,
    }
}

/// Whether the caller belongs to the campaign (owner, stored role, or granted one).
pub fn is_member(campaign: &CampaignState, caller: Option<&Caller>) -> bool {
    caller.is_some_and(|caller| {
        caller.granted.is_some() || stored_role(campaign, Some(&caller.actor.user_id)).is_some()
    })
}

/// Whether the caller may know the campaign exists.
pub fn sees(campaign: &CampaignState, caller: Option<&Caller>) -> bool {
    campaign.visibility != Visibility::Private || is_member(campaign, caller)
}

/// Whether the campaign appears in the caller's listings.
pub fn lists(campaign: &CampaignState, caller: Option<&Caller>) -> bool {
    campaign.visibility == Visibility::Public || is_member(campaign, caller)
}

/// The role stored for `user` (the owner owns the campaign; members have theirs), if any.
pub fn stored_role(campaign: &CampaignState, user: Option<&UserId>) -> Option<Role> {
    let user = user?;
    if *user == campaign.owner().user_id {
        return Some(Role::Owner);
    }
    campaign.members.get(user).map(|member| member.role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rally_app::model::{CampaignId, CampaignStatus, Member, Timestamp};
    use std::collections::{BTreeMap, BTreeSet};

    fn actor(id: &str) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            display_name: id.to_uppercase(),
        }
    }

    fn campaign(visibility: Visibility) -> CampaignState {
        let at = Timestamp::from_unix_nanos(1);
        CampaignState {
            id: CampaignId::parse("launch").unwrap(),
            title: "Launch".into(),
            description: String::new(),
            status: CampaignStatus::Draft,
            visibility,
            features: BTreeSet::new(),
            config: BTreeMap::new(),
            handed_to: None,
            members: BTreeMap::from([(
                UserId::parse("editor").unwrap(),
                Member {
                    display_name: "Editor".into(),
                    role: Role::Editor,
                },
            )]),
            version: 1,
            created_at: at,
            created_by: actor("owner"),
            updated_at: at,
            updated_by: actor("owner"),
        }
    }

    fn person(id: &str) -> Option<Caller> {
        Some(Caller::person(actor(id)))
    }

    fn granted(id: &str, role: Role) -> Option<Caller> {
        Some(Caller {
            actor: actor(id),
            granted: Some(role),
        })
    }

    #[test]
    fn who_sees_and_who_lists() {
        use Visibility::*;
        // (visibility, caller, sees, lists, role)
        let table: Vec<(Visibility, Option<Caller>, bool, bool, Role)> = vec![
            (Private, None, false, false, Role::Viewer),
            (Private, person("stranger"), false, false, Role::Viewer),
            (Private, person("owner"), true, true, Role::Owner),
            (Private, person("editor"), true, true, Role::Editor),
            (
                Private,
                granted("guest", Role::Viewer),
                true,
                true,
                Role::Viewer,
            ),
            (
                Private,
                granted("editor", Role::Viewer),
                true,
                true,
                Role::Editor,
            ),
            (Unlisted, None, true, false, Role::Viewer),
            (Unlisted, person("stranger"), true, false, Role::Viewer),
            (Unlisted, person("editor"), true, true, Role::Editor),
            (
                Unlisted,
                granted("guest", Role::Editor),
                true,
                true,
                Role::Editor,
            ),
            (Public, None, true, true, Role::Viewer),
            (Public, person("stranger"), true, true, Role::Viewer),
            (Public, person("owner"), true, true, Role::Owner),
        ];
        for (visibility, caller, seen, listed, expected_role) in table {
            let campaign = campaign(visibility);
            let who = caller.as_ref().map(|c| c.actor.user_id.as_str().to_owned());
            assert_eq!(
                sees(&campaign, caller.as_ref()),
                seen,
                "sees {visibility} {who:?}"
            );
            assert_eq!(
                lists(&campaign, caller.as_ref()),
                listed,
                "lists {visibility} {who:?}"
            );
            assert_eq!(
                role(&campaign, caller.as_ref()),
                expected_role,
                "role {visibility} {who:?}"
            );
        }
    }
}
