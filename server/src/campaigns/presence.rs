//! Who is watching a campaign, and when to tell its subscribers: pure, time passed in.
//!
//! The writer counts its own instance's viewers in [`LocalViewers`] (per person, so a person with
//! three tabs is one entry with three connections), merges them with what other instances report
//! ([`merge_viewers`]), and lets a [`PresenceAnnouncer`] decide what to push:
//!
//! - joins and leaves here are coalesced: at most one push per [`PRESENCE_DEBOUNCE`], naming at
//!   most [`PRESENCE_NAMED`] people who joined and as many who left (the full list is always in
//!   the push), so a crowd arriving costs a few pushes, not one per person;
//! - after a quiet spell a change goes out at once;
//! - a change seen in other instances' lists is pushed only if the merged list differs from the
//!   one last announced, with who joined and left computed from the difference.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rally_app::model::{Actor, CampaignId, Presence, UserId, Viewer, PRESENCE_LIST_MAX};
use rally_app::protocol::campaign::{PresenceChanged, PresencePerson};

/// People named in one presence push's joined/left lists.
pub const PRESENCE_NAMED: usize = 20;
/// Least time between two presence pushes for one campaign.
pub const PRESENCE_DEBOUNCE: Duration = Duration::from_millis(150);
/// How anonymous visitors appear in lists.
const ANONYMOUS: &str = "Anonymous";

/// Identifies one WebSocket connection across its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// This instance's viewers of one campaign, counted per person and kept in display order, so a
/// presence list costs O(list), not O(viewers).
#[derive(Debug, Default)]
pub struct LocalViewers {
    users: BTreeMap<(String, UserId), u32>,
    anonymous: u32,
    /// Connections publishing in the live room, per user (anonymous visitors never publish).
    live: HashMap<UserId, u32>,
}

impl LocalViewers {
    pub fn add(&mut self, viewer: &Option<Actor>) {
        match viewer {
            Some(actor) => {
                *self
                    .users
                    .entry((actor.display_name.clone(), actor.user_id.clone()))
                    .or_default() += 1
            }
            None => self.anonymous += 1,
        }
    }

    pub fn remove(&mut self, viewer: &Option<Actor>) {
        match viewer {
            Some(actor) => {
                let key = (actor.display_name.clone(), actor.user_id.clone());
                if let Some(count) = self.users.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        self.users.remove(&key);
                    }
                }
            }
            None => self.anonymous = self.anonymous.saturating_sub(1),
        }
    }

    /// One of `user`'s connections started (`true`) or stopped (`false`) publishing.
    pub fn set_live(&mut self, user: &UserId, live: bool) {
        if live {
            *self.live.entry(user.clone()).or_default() += 1;
        } else if let Some(count) = self.live.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                self.live.remove(user);
            }
        }
    }

    /// People watching here: each signed-in user once, each anonymous connection once.
    pub fn people(&self) -> u32 {
        self.users.len() as u32 + self.anonymous
    }

    /// At most [`PRESENCE_LIST_MAX`] signed-in viewers, then the anonymous ones as one entry.
    pub fn listed(&self) -> Vec<Viewer> {
        let mut viewers: Vec<Viewer> = self
            .users
            .iter()
            .take(PRESENCE_LIST_MAX)
            .map(|((name, id), connections)| Viewer {
                user_id: Some(id.clone()),
                display_name: name.clone(),
                connections: *connections,
                live: self.live.contains_key(id),
            })
            .collect();
        if self.anonymous > 0 {
            viewers.push(Viewer {
                user_id: None,
                display_name: ANONYMOUS.into(),
                connections: self.anonymous,
                live: false,
            });
        }
        viewers
    }
}

/// How a viewer is named in joined/left lists.
pub fn person(viewer: &Option<Actor>) -> PresencePerson {
    match viewer {
        Some(actor) => PresencePerson {
            user_id: Some(actor.user_id.clone()),
            display_name: actor.display_name.clone(),
        },
        None => PresencePerson {
            user_id: None,
            display_name: ANONYMOUS.into(),
        },
    }
}

/// Merge viewer lists from several instances: one entry per signed-in user (connections added
/// up, live if live anywhere) sorted by name, at most [`PRESENCE_LIST_MAX`], then one "Anonymous" entry for all
/// anonymous connections.
pub fn merge_viewers(lists: impl IntoIterator<Item = Viewer>) -> Vec<Viewer> {
    let mut by_user: HashMap<String, Viewer> = HashMap::new();
    let mut anonymous = 0u32;
    for viewer in lists {
        match &viewer.user_id {
            Some(id) => {
                by_user
                    .entry(id.to_string())
                    .and_modify(|v| {
                        v.connections += viewer.connections;
                        v.live |= viewer.live;
                    })
                    .or_insert(viewer);
            }
            None => anonymous += viewer.connections,
        }
    }
    let mut merged: Vec<Viewer> = by_user.into_values().collect();
    merged.sort_by(|a, b| (&a.display_name, &a.user_id).cmp(&(&b.display_name, &b.user_id)));
    merged.truncate(PRESENCE_LIST_MAX);
    if anonymous > 0 {
        merged.push(Viewer {
            user_id: None,
            display_name: ANONYMOUS.into(),
            connections: anonymous,
            live: false,
        });
    }
    merged
}

/// Everyone watching `campaign`: this instance's viewers and the other instances' lists (their
/// entries one after the other, `remote_people` people in all).
///
/// A person signed in on two instances is one person: while every list is complete, `count`
/// counts signed-in users once each (and every anonymous connection). Lists are capped, so in
/// a crowd larger than the cap the instances' counts are added up instead.
pub fn presence(
    campaign: &CampaignId,
    local: &LocalViewers,
    remote: &[Viewer],
    remote_people: u32,
) -> Presence {
    let listed_named = remote.iter().filter(|v| v.user_id.is_some()).count() as u32;
    let remote_anonymous: u32 = remote
        .iter()
        .filter(|v| v.user_id.is_none())
        .map(|v| v.connections)
        .sum();
    let complete =
        local.users.len() <= PRESENCE_LIST_MAX && listed_named + remote_anonymous == remote_people;
    let count = if complete {
        let mut named: std::collections::HashSet<&UserId> =
            local.users.keys().map(|(_, id)| id).collect();
        named.extend(remote.iter().filter_map(|v| v.user_id.as_ref()));
        named.len() as u32 + local.anonymous + remote_anonymous
    } else {
        local.people() + remote_people
    };
    Presence {
        campaign_id: campaign.clone(),
        count,
        viewers: merge_viewers(local.listed().into_iter().chain(remote.iter().cloned())),
    }
}

/// Decides when presence changes are pushed and what they say (see the module docs).
#[derive(Debug)]
pub struct PresenceAnnouncer {
    /// The list in the last push, to tell who joined or left.
    announced: Vec<Viewer>,
    /// Changes here not pushed yet.
    pending: Option<(Vec<PresencePerson>, Vec<PresencePerson>)>,
    last_push: Option<Instant>,
}

impl Default for PresenceAnnouncer {
    fn default() -> Self {
        PresenceAnnouncer {
            announced: Vec::new(),
            pending: None,
            last_push: None,
        }
    }
}

impl PresenceAnnouncer {
    /// Someone joined or left here (or neither: someone went live or stopped).
    pub fn changed(&mut self, joined: Option<PresencePerson>, left: Option<PresencePerson>) {
        let (joining, leaving) = self.pending.get_or_insert_with(Default::default);
        for (list, person) in [(joining, joined), (leaving, left)] {
            if let Some(person) = person {
                if list.len() < PRESENCE_NAMED {
                    list.push(person);
                }
            }
        }
    }

    /// When the pending change is due (`None`: nothing pending): at once after a quiet spell,
    /// otherwise one debounce interval after the previous push.
    pub fn due(&self, now: Instant) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(match self.last_push {
            Some(last) => (last + PRESENCE_DEBOUNCE).max(now),
            None => now,
        })
    }

    /// The push for the pending changes, with `presence` as it is now.
    pub fn take(&mut self, now: Instant, presence: Presence) -> Option<PresenceChanged> {
        let (joined, left) = self.pending.take()?;
        Some(self.push(now, presence, joined, left))
    }

    /// Other instances' viewers changed: the push, if the merged list differs from the last one
    /// announced.
    pub fn compare(&mut self, now: Instant, presence: Presence) -> Option<PresenceChanged> {
        if presence.viewers == self.announced {
            return None;
        }
        let named = |list: &[Viewer]| -> Vec<PresencePerson> {
            list.iter()
                .filter(|v| v.user_id.is_some())
                .map(|v| PresencePerson {
                    user_id: v.user_id.clone(),
                    display_name: v.display_name.clone(),
                })
                .collect()
        };
        let (before, after) = (named(&self.announced), named(&presence.viewers));
        let joined = after.iter().filter(|p| !before.contains(p)).cloned();
        let left = before.iter().filter(|p| !after.contains(p)).cloned();
        let (joined, left) = (joined.collect(), left.collect());
        Some(self.push(now, presence, joined, left))
    }

    fn push(
        &mut self,
        now: Instant,
        presence: Presence,
        joined: Vec<PresencePerson>,
        left: Vec<PresencePerson>,
    ) -> PresenceChanged {
        self.announced = presence.viewers.clone();
        self.last_push = Some(now);
        PresenceChanged {
            presence,
            joined,
            left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str, name: &str) -> Option<Actor> {
        Some(Actor {
            user_id: UserId::parse(id).unwrap(),
            display_name: name.into(),
        })
    }

    fn viewer(id: Option<&str>, name: &str, connections: u32) -> Viewer {
        Viewer {
            user_id: id.map(|i| UserId::parse(i).unwrap()),
            display_name: name.into(),
            connections,
            live: false,
        }
    }

    fn names(people: &[PresencePerson]) -> Vec<&str> {
        people.iter().map(|p| p.display_name.as_str()).collect()
    }

    #[test]
    fn a_person_is_live_while_any_of_their_connections_publishes_on_any_instance() {
        let ada = UserId::parse("u1").unwrap();
        let mut local = LocalViewers::default();
        local.add(&actor("u1", "Ada"));
        local.add(&actor("u1", "Ada"));
        local.set_live(&ada, true);
        local.set_live(&ada, true);
        local.set_live(&ada, false);
        assert!(local.listed()[0].live, "one tab still publishes");
        local.set_live(&ada, false);
        assert!(!local.listed()[0].live);

        let mut there = viewer(Some("u1"), "Ada", 1);
        there.live = true;
        let merged = merge_viewers([viewer(Some("u1"), "Ada", 2), there]);
        assert_eq!(merged.len(), 1);
        assert!(merged[0].live, "live on another instance is live");
        assert_eq!(merged[0].connections, 3);
    }

    #[test]
    fn local_viewers_count_people_not_tabs() {
        let mut local = LocalViewers::default();
        local.add(&actor("u1", "Ada"));
        local.add(&actor("u1", "Ada"));
        local.add(&None);
        local.add(&actor("u2", "Bob"));
        assert_eq!(local.people(), 3);
        assert_eq!(
            local.listed(),
            [
                viewer(Some("u1"), "Ada", 2),
                viewer(Some("u2"), "Bob", 1),
                viewer(None, "Anonymous", 1)
            ]
        );
        local.remove(&actor("u1", "Ada"));
        local.remove(&actor("u1", "Ada"));
        local.remove(&None);
        local.remove(&None); // never below zero
        assert_eq!(local.listed(), [viewer(Some("u2"), "Bob", 1)]);
    }

    #[test]
    fn merging_adds_up_connections_per_user_and_counts_anonymous_together() {
        let merged = merge_viewers([
            viewer(Some("u1"), "Ada", 1),
            viewer(None, "Anonymous", 1),
            viewer(Some("u2"), "Bob", 2),
            viewer(Some("u1"), "Ada", 2),
            viewer(None, "Anonymous", 1),
        ]);
        assert_eq!(
            merged,
            [
                viewer(Some("u1"), "Ada", 3),
                viewer(Some("u2"), "Bob", 2),
                viewer(None, "Anonymous", 2)
            ]
        );
        let crowd = merge_viewers(
            (0..150).map(|i| viewer(Some(&format!("u{i:03}")), &format!("N{i:03}"), 1)),
        );
        assert_eq!(crowd.len(), PRESENCE_LIST_MAX, "the list is capped");
    }

    #[test]
    fn a_person_on_two_instances_counts_once() {
        let id = CampaignId::parse("c").unwrap();
        let mut local = LocalViewers::default();
        local.add(&actor("u1", "Ada"));
        local.add(&None);
        // Another instance: Ada again, Bob, and two anonymous visitors (4 people there).
        let remote = [
            viewer(Some("u1"), "Ada", 1),
            viewer(Some("u2"), "Bob", 1),
            viewer(None, "Anonymous", 2),
        ];
        let both = presence(&id, &local, &remote, 4);
        assert_eq!(both.count, 5, "Ada, Bob and three anonymous visitors");
        assert_eq!(both.viewers[0], viewer(Some("u1"), "Ada", 2));
        // A remote list that was cut short: its people cannot be told apart, so they add up.
        let partial = presence(&id, &local, &remote[..1], 4);
        assert_eq!(partial.count, 2 + 4);
    }

    fn presence_of(viewers: Vec<Viewer>) -> Presence {
        Presence {
            campaign_id: CampaignId::parse("c").unwrap(),
            count: viewers.len() as u32,
            viewers,
        }
    }

    #[test]
    fn changes_are_coalesced_into_one_push_per_debounce_interval() {
        let t0 = Instant::now();
        let mut announcer = PresenceAnnouncer::default();
        assert_eq!(announcer.due(t0), None, "nothing pending");
        announcer.changed(Some(person(&actor("u1", "Ada"))), None);
        assert_eq!(announcer.due(t0), Some(t0), "first change: at once");
        let push = announcer.take(t0, presence_of(vec![])).unwrap();
        assert_eq!(names(&push.joined), ["Ada"]);

        let t1 = t0 + Duration::from_millis(10);
        announcer.changed(Some(person(&actor("u2", "Bob"))), None);
        announcer.changed(None, Some(person(&None)));
        assert_eq!(announcer.due(t1), Some(t0 + PRESENCE_DEBOUNCE));
        let push = announcer
            .take(t0 + PRESENCE_DEBOUNCE, presence_of(vec![]))
            .unwrap();
        assert_eq!(
            (names(&push.joined), names(&push.left)),
            (vec!["Bob"], vec!["Anonymous"])
        );
        assert!(
            announcer.take(t1, presence_of(vec![])).is_none(),
            "taken once"
        );

        let quiet = t0 + Duration::from_secs(5);
        announcer.changed(None, Some(person(&actor("u1", "Ada"))));
        assert_eq!(
            announcer.due(quiet),
            Some(quiet),
            "after a quiet spell: at once"
        );
    }

    #[test]
    fn a_crowd_is_named_up_to_the_limit() {
        let mut announcer = PresenceAnnouncer::default();
        for i in 0..50 {
            announcer.changed(Some(person(&actor(&format!("u{i}"), "X"))), None);
        }
        let push = announcer.take(Instant::now(), presence_of(vec![])).unwrap();
        assert_eq!(push.joined.len(), PRESENCE_NAMED);
    }

    #[test]
    fn remote_changes_are_pushed_only_when_the_list_differs() {
        let now = Instant::now();
        let mut announcer = PresenceAnnouncer::default();
        let ada = viewer(Some("u1"), "Ada", 1);
        let bob = viewer(Some("u2"), "Bob", 1);
        let push = announcer
            .compare(now, presence_of(vec![ada.clone()]))
            .unwrap();
        assert_eq!(names(&push.joined), ["Ada"]);
        assert!(announcer
            .compare(now, presence_of(vec![ada.clone()]))
            .is_none());
        let push = announcer.compare(now, presence_of(vec![bob])).unwrap();
        assert_eq!(
            (names(&push.joined), names(&push.left)),
            (vec!["Bob"], vec!["Ada"])
        );
    }
}
