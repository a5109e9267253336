//! The invite links a campaign keeps, beside its state: what the events that make, use and
//! withdraw them do to the kept links, and whether a link lets someone in. Pure: the core passes
//! the time in. Every instance runs [`note`] on the same events, so all of them keep the same
//! links (in Redis mode another instance's join counts against a link's uses like a local one).

use std::collections::BTreeMap;

use rally_app::model::limits::{INVITES_KEPT, INVITE_USES_LISTED};
use rally_app::model::{
    CampaignEvent, CampaignState, Change, Invite, InviteId, InviteStatus, InviteUse, Role,
    Timestamp,
};
use rally_app::protocol::{ErrorBody, ErrorCode};

use super::access;

pub type Invites = BTreeMap<InviteId, Invite>;

/// Keep `invites` in step with an event that was just applied.
pub fn note(invites: &mut Invites, event: &CampaignEvent) {
    match &event.change {
        Change::Invite { terms } => {
            make_room(invites, event.changed_at);
            invites.insert(
                terms.id.clone(),
                Invite {
                    terms: terms.clone(),
                    made_by: event.changed_by.clone(),
                    made_at: event.changed_at,
                    used: 0,
                    uses: Vec::new(),
                    withdrawn_at: None,
                },
            );
        }
        Change::InviteWithdrawn { id } => {
            if let Some(invite) = invites.get_mut(id) {
                invite.withdrawn_at.get_or_insert(event.changed_at);
            }
        }
        Change::Member {
            member,
            role: Some(_),
            invite: Some(id),
        } => {
            if let Some(invite) = invites.get_mut(id) {
                invite.used = invite.used.saturating_add(1);
                invite.uses.push(InviteUse {
                    user_id: member.user_id.clone(),
                    display_name: member.display_name.clone(),
                    at: event.changed_at,
                });
                if invite.uses.len() > INVITE_USES_LISTED {
                    invite.uses.remove(0);
                }
            }
        }
        _ => {}
    }
}

/// End every link made before `at` that still lets people in (someone lost their place in the
/// campaign at `at`): it counts as withdrawn from then on.
pub fn end_older(invites: &mut Invites, at: Timestamp) {
    for invite in invites.values_mut() {
        if invite.made_at < at && invite.withdrawn_at.is_none() {
            invite.withdrawn_at = Some(at);
        }
    }
}

/// Whether one more link fits: links that let nobody in make room, open ones do not.
pub fn room_for_one_more(invites: &Invites, now: Timestamp) -> Result<(), ErrorBody> {
    let open = invites
        .values()
        .filter(|invite| invite.status(now) == InviteStatus::Open)
        .count();
    if open >= INVITES_KEPT {
        return Err(ErrorBody::new(
            ErrorCode::LimitExceeded,
            format!("a campaign has at most {INVITES_KEPT} open invite links; withdraw some first"),
        ));
    }
    Ok(())
}

/// Forget the oldest links that let nobody in until there is room for one more.
fn make_room(invites: &mut Invites, now: Timestamp) {
    while invites.len() >= INVITES_KEPT {
        let oldest_finished = invites
            .values()
            .filter(|invite| invite.status(now) != InviteStatus::Open)
            .min_by_key(|invite| (invite.made_at, invite.terms.id.clone()))
            .map(|invite| invite.terms.id.clone());
        match oldest_finished {
            Some(id) => drop(invites.remove(&id)),
            None => break,
        }
    }
}

/// The link `id` if it lets people in now. It does not, in this order, when the campaign no
/// longer keeps it, an owner withdrew it, it expired, it is used up, it was made before someone
/// lost their place (`valid_from`), or its maker is no longer an owner.
pub fn admit<'a>(
    invites: &'a Invites,
    state: &CampaignState,
    valid_from: Option<Timestamp>,
    id: &InviteId,
    now: Timestamp,
) -> Result<&'a Invite, ErrorBody> {
    let refused = |why: &str| ErrorBody::new(ErrorCode::Invalid, why);
    let Some(invite) = invites.get(id) else {
        return Err(refused(
            "this invite link no longer works; ask an owner for a new one",
        ));
    };
    if let Some(why) = invite.status(now).refusal() {
        return Err(refused(why));
    }
    if valid_from.is_some_and(|from| invite.made_at < from) {
        return Err(refused(
            "this invite link no longer works: someone lost their place in the campaign after it was made; ask an owner for a new one",
        ));
    }
    if access::stored_role(state, Some(&invite.made_by.user_id)) != Some(Role::Owner) {
        return Err(refused(
            "this invite link no longer works: the person who made it is no longer an owner",
        ));
    }
    Ok(invite)
}

/// The links an owner sees, newest first.
pub fn newest_first(invites: &Invites) -> Vec<Invite> {
    let mut list: Vec<Invite> = invites.values().cloned().collect();
    list.sort_by(|a, b| (b.made_at, &b.terms.id).cmp(&(a.made_at, &a.terms.id)));
    list
}

#[cfg(test)]
mod tests {
    use rally_app::model::{Actor, CampaignId, EventId, InviteTerms, Member, UserId};

    use super::*;

    fn actor(id: &str) -> Actor {
        Actor {
            user_id: UserId::parse(id).unwrap(),
            display_name: id.to_uppercase(),
        }
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    fn id(n: usize) -> InviteId {
        InviteId::parse(&format!("{n:x}")).unwrap()
    }

    fn event(by: &str, at_secs: u64, change: Change) -> CampaignEvent {
        CampaignEvent {
            campaign_id: CampaignId::parse("c").unwrap(),
            version: 2,
            event_id: EventId::new(at_secs, 0, 0),
            changed_by: actor(by),
            changed_at: at(at_secs),
            change,
            idempotency: None,
        }
    }

    fn made(n: usize, max_uses: Option<u32>, at_secs: u64) -> CampaignEvent {
        let terms = InviteTerms {
            id: id(n),
            role: Role::Editor,
            max_uses,
            expires_at: at(1000),
        };
        event("ada", at_secs, Change::Invite { terms })
    }

    fn joined(who: &str, n: usize, at_secs: u64) -> CampaignEvent {
        let change = Change::Member {
            member: actor(who),
            role: Some(Role::Editor),
            invite: Some(id(n)),
        };
        event(who, at_secs, change)
    }

    /// A campaign owned by `ada`, with `others` as members.
    fn campaign(others: &[(&str, Role)]) -> CampaignState {
        let mut state: CampaignState = serde_json::from_value(serde_json::json!({
            "id": "c", "title": "t", "description": "", "status": "draft",
            "visibility": "private", "features": [], "config": {}, "version": 1,
            "created_at": "2026-01-01T00:00:00Z", "created_by": {"user_id": "ada", "display_name": "ADA"},
            "updated_at": "2026-01-01T00:00:00Z", "updated_by": {"user_id": "ada", "display_name": "ADA"}
        }))
        .unwrap();
        for (user, role) in others {
            let member = Member {
                display_name: user.to_uppercase(),
                role: *role,
            };
            state.members.insert(UserId::parse(user).unwrap(), member);
        }
        state
    }

    #[test]
    fn events_make_use_and_withdraw_links() {
        let mut invites = Invites::new();
        note(&mut invites, &made(1, Some(2), 10));
        note(&mut invites, &joined("bob", 1, 11));
        let uses: Vec<_> = invites[&id(1)]
            .uses
            .iter()
            .map(|u| u.user_id.as_str())
            .collect();
        assert_eq!(uses, ["bob"]);
        assert_eq!(invites[&id(1)].made_by, actor("ada"));
        note(&mut invites, &joined("cy", 1, 13));
        assert_eq!(invites[&id(1)].status(at(14)), InviteStatus::UsedUp);
        note(
            &mut invites,
            &event("ada", 15, Change::InviteWithdrawn { id: id(1) }),
        );
        note(
            &mut invites,
            &event("ada", 16, Change::InviteWithdrawn { id: id(1) }),
        );
        assert_eq!(
            invites[&id(1)].withdrawn_at,
            Some(at(15)),
            "the first withdrawal counts"
        );
        // Events about links the campaign no longer keeps change nothing.
        note(&mut invites, &joined("dee", 9, 17));
        note(
            &mut invites,
            &event("ada", 18, Change::InviteWithdrawn { id: id(9) }),
        );
        assert_eq!(invites.len(), 1);
    }

    #[test]
    fn finished_links_make_room_oldest_first_and_open_ones_never() {
        let mut invites = Invites::new();
        for n in 0..INVITES_KEPT {
            note(&mut invites, &made(n, Some(1), 10 + n as u64));
        }
        assert!(room_for_one_more(&invites, at(500)).is_err());
        note(&mut invites, &joined("bob", 7, 600));
        note(&mut invites, &joined("cy", 3, 601));
        room_for_one_more(&invites, at(602)).unwrap();
        note(&mut invites, &made(500, None, 602));
        assert_eq!(invites.len(), INVITES_KEPT);
        assert!(!invites.contains_key(&id(3)), "the older used-up link went");
        assert!(invites.contains_key(&id(7)));
        // Past every expiry, all are finished and make room.
        note(&mut invites, &made(501, None, 2000));
        assert_eq!(invites.len(), INVITES_KEPT);
        assert!(!invites.contains_key(&id(0)));
    }

    #[test]
    fn a_link_lets_people_in_only_while_it_works() {
        let state = campaign(&[("bob", Role::Editor), ("ola", Role::Owner)]);
        let mut invites = Invites::new();
        note(&mut invites, &made(1, Some(1), 10));
        note(&mut invites, &joined("bob", 1, 11));
        let mut by_ola = made(2, None, 12);
        by_ola.changed_by = actor("ola");
        note(&mut invites, &by_ola);
        let mut by_bob = made(3, None, 12);
        by_bob.changed_by = actor("bob");
        note(&mut invites, &by_bob);
        note(&mut invites, &made(4, None, 13));
        note(
            &mut invites,
            &event("ada", 14, Change::InviteWithdrawn { id: id(4) }),
        );
        let cases: [(usize, Option<Timestamp>, u64, Option<&str>); 7] = [
            (1, None, 20, Some("used as many times")),
            (1, None, 1000, Some("expired")),
            (2, None, 20, None),
            (2, Some(at(13)), 20, Some("lost their place")),
            (3, None, 20, Some("no longer an owner")),
            (4, None, 20, Some("withdrawn")),
            (9, None, 20, Some("no longer works")),
        ];
        for (n, valid_from, now, refusal) in cases {
            let answer = admit(&invites, &state, valid_from, &id(n), at(now));
            match (answer, refusal) {
                (Ok(invite), None) => assert_eq!(invite.terms.id, id(n)),
                (Err(error), Some(why)) => {
                    assert_eq!(error.code, ErrorCode::Invalid);
                    assert!(error.message.contains(why), "link {n}: {}", error.message);
                }
                (answer, _) => panic!("link {n} at {now}: {answer:?}"),
            }
        }
    }

    #[test]
    fn every_use_counts_and_the_latest_are_listed() {
        let mut invites = Invites::new();
        note(&mut invites, &made(1, None, 10));
        for n in 0..INVITE_USES_LISTED + 5 {
            note(&mut invites, &joined(&format!("p{n}"), 1, 11 + n as u64));
        }
        let invite = &invites[&id(1)];
        assert_eq!(invite.used as usize, INVITE_USES_LISTED + 5);
        assert_eq!(invite.uses.len(), INVITE_USES_LISTED);
        assert_eq!(invite.uses[0].user_id.as_str(), "p5", "the oldest go first");
    }

    #[test]
    fn owners_see_the_newest_links_first() {
        let mut invites = Invites::new();
        note(&mut invites, &made(2, None, 10));
        note(&mut invites, &made(1, None, 11));
        note(&mut invites, &made(3, None, 11));
        let order: Vec<_> = newest_first(&invites)
            .into_iter()
            .map(|invite| invite.terms.id)
            .collect();
        assert_eq!(order, [id(3), id(1), id(2)]);
    }
}
