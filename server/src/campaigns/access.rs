//! Who may see a campaign and what they may do in it: pure rules over its state and the caller.
//!
//! - A caller's **role** is the higher of the one stored for them (the owner: its creator, or
//!   whoever it was handed over to; members are listed in its state) and the one their credential grants (a backend token's
//!   `campaigns` claim); everyone else is a viewer.
//! - A **member** is the owner, someone with a stored role, or someone whose credential grants a
//!   role on the campaign.
//! - An **API key**'s role is its grant and nothing else: stored roles never count for it, so a key
//!   owns nothing and cannot be made an owner. A key an owner made works only while that person
//!   still owns the campaign (like their invite links); without its grant a key is a stranger.
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
    /// Set when the credential is an API key (see the module doc).
    pub key: Option<KeyBond>,
}

/// What an API key's grant rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBond {
    /// The owner who made it: it works while they own the campaign. None: an admin's or the
    /// operator's key, which rests on nothing.
    pub made_by_owner: Option<UserId>,
}

impl Caller {
    /// Someone whose roles are only the stored ones.
    pub fn person(actor: Actor) -> Caller {
        Caller {
            actor,
            granted: None,
            key: None,
        }
    }
}

/// An API key's grant on `campaign`, if it still holds.
fn key_grant(campaign: &CampaignState, caller: &Caller, bond: &KeyBond) -> Option<Role> {
    let vouched = bond
        .made_by_owner
        .as_ref()
        .is_none_or(|maker| stored_role(campaign, Some(maker)) == Some(Role::Owner));
    caller.granted.filter(|_| vouched)
}

/// The caller's role (None: anonymous).
pub fn role(campaign: &CampaignState, caller: Option<&Caller>) -> Role {
    let Some(caller) = caller else {
        return Role::Viewer;
    };
    if let Some(bond) = &caller.key {
        return key_grant(campaign, caller, bond).unwrap_or(Role::Viewer);
    }
    let stored = stored_role(campaign, Some(&caller.actor.user_id)).unwrap_or(Role::Viewer);
    match caller.granted {
        Some(granted) => stored.max(granted),
        None => stored,
    }
}

/// Whether the caller belongs to the campaign (owner, stored role, or granted one).
pub fn is_member(campaign: &CampaignState, caller: Option<&Caller>) -> bool {
    caller.is_some_and(|caller| match &caller.key {
        Some(bond) => key_grant(campaign, caller, bond).is_some(),
        None => {
            caller.granted.is_some() || stored_role(campaign, Some(&caller.actor.user_id)).is_some()
        }
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
            key: None,
        })
    }

    /// An API key with `id`'s stored roles (if any), granted `role`, made by `maker`.
    fn key(id: &str, role: Option<Role>, maker: Option<&str>) -> Option<Caller> {
        Some(Caller {
            actor: actor(id),
            granted: role,
            key: Some(KeyBond {
                made_by_owner: maker.map(|m| UserId::parse(m).unwrap()),
            }),
        })
    }

    #[test]
    fn a_key_is_its_grant_while_its_maker_owns_the_campaign() {
        use Visibility::*;
        // (caller, sees a private campaign, role)
        let table = [
            (
                key("k1", Some(Role::Editor), Some("owner")),
                true,
                Role::Editor,
            ),
            (
                key("k1", Some(Role::Viewer), Some("owner")),
                true,
                Role::Viewer,
            ),
            // Its maker is no longer an owner (an editor now): the key is a stranger.
            (
                key("k1", Some(Role::Editor), Some("editor")),
                false,
                Role::Viewer,
            ),
            (
                key("k1", Some(Role::Editor), Some("stranger")),
                false,
                Role::Viewer,
            ),
            // An admin's or the operator's key rests on nobody.
            (key("k1", Some(Role::Editor), None), true, Role::Editor),
            // Beyond its reach.
            (key("k1", None, None), false, Role::Viewer),
            // A stored role does not count for a key, even the owner's.
            (key("owner", Some(Role::Editor), None), true, Role::Editor),
            (key("editor", None, None), false, Role::Viewer),
        ];
        for (caller, seen, expected) in table {
            let campaign = campaign(Private);
            assert_eq!(sees(&campaign, caller.as_ref()), seen, "{caller:?}");
            assert_eq!(role(&campaign, caller.as_ref()), expected, "{caller:?}");
        }
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
