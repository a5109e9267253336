//! Who belongs to the campaign: its owner and the members, with their roles. Owners change a
//! member's role or remove them; the owner can hand the campaign over to a member (after saying
//! yes once more); everyone else reads the list. People become members by accepting an invite
//! link.

use leptos::prelude::*;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::app::SignedInUser;
use crate::model::{Handover, Member, MemberChange, Role, UserId, Write};
use crate::pages::erase::Erase;

const ROLES: [Role; 3] = [Role::Viewer, Role::Editor, Role::Owner];

#[component]
pub fn MembersPanel(model: CampaignModel) -> impl IntoView {
    let members = Memo::new(move |_| {
        model.shown.with(|s| {
            let mut list: Vec<(UserId, Member)> = s
                .members
                .iter()
                .map(|(id, member)| (id.clone(), member.clone()))
                .collect();
            list.sort_by(|a, b| {
                b.1.role
                    .cmp(&a.1.role)
                    .then_with(|| a.1.display_name.cmp(&b.1.display_name))
            });
            list
        })
    });
    let owner = move || model.shown.with(|s| s.owner().display_name.clone());
    let owner_note = move || {
        if model
            .shown
            .with(|s| s.owner().user_id == s.created_by.user_id)
        {
            "owner · created it"
        } else {
            "owner"
        }
    };
    let manages = move || model.role.get() == Role::Owner && model.can_edit();
    // Only the owner hands the campaign over: whoever is signed in, if it is them.
    let me = use_context::<SignedInUser>();
    let hands_over = move || {
        let me = me.and_then(|me| me.0.get().flatten());
        manages() && me.is_some_and(|me| model.shown.with(|s| s.owner().user_id == me.user_id))
    };
    // The member the owner is about to hand the campaign to (asked to confirm).
    let confirming = RwSignal::new(None::<UserId>);
    let hand_over = move |user_id: UserId| {
        confirming.set(None);
        model.submit(Write::Handover(Handover {
            campaign_id: model.id.get_value(),
            user_id,
            base_version: None,
        }))
    };
    let change = move |user_id: UserId, role: Option<Role>| {
        model.submit(Write::Member(MemberChange {
            campaign_id: model.id.get_value(),
            user_id,
            role,
            base_version: None,
        }))
    };
    view! {
        <section class="panel members" aria-labelledby="members-heading">
            <h2 id="members-heading">"Members"</h2>
            <ul class="member-list">
                <li class="member" data-role="owner" data-owner="true">
                    <span class="member-name">{owner}</span>
                    <span class="role-badge">{owner_note}</span>
                </li>
                <For
                    each=move || members.get()
                    key=|(id, member)| (id.clone(), member.role)
                    children=move |(id, member): (UserId, Member)| {
                        let name = member.display_name.clone();
                        let role = member.role;
                        let role_label = format!("Role of {name}");
                        let remove_label = format!("Remove {name}");
                        let for_select = id.clone();
                        let for_remove = id.clone();
                        let for_handover = id.clone();
                        let handover_label = format!("Hand the campaign over to {name}");
                        let confirm_text = format!("Make {name} the owner? You stay an owner.");
                        view! {
                            <li class="member" data-user=id.to_string() data-role=role.as_str()>
                                <span class="member-name">{name}</span>
                                <Show
                                    when=manages
                                    fallback=move || view! { <span class="role-badge">{role.as_str()}</span> }.erase()
                                >
                                    <select
                                        class="member-role"
                                        aria-label=role_label.clone()
                                        on:change={
                                            let user = for_select.clone();
                                            move |ev| {
                                                let chosen = event_target_value(&ev);
                                                if let Some(new) = ROLES.into_iter().find(|r| r.as_str() == chosen) {
                                                    change(user.clone(), Some(new));
                                                }
                                            }
                                        }
                                    >
                                        {ROLES
                                            .into_iter()
                                            .map(|option| view! {
                                                <option value=option.as_str() selected=option == role>
                                                    {option.as_str()}
                                                </option>
                                            })
                                            .collect_view()}
                                    </select>
                                    <button
                                        class="link-button remove-member"
                                        aria-label=remove_label.clone()
                                        on:click={
                                            let user = for_remove.clone();
                                            move |_| change(user.clone(), None)
                                        }
                                    >
                                        "Remove"
                                    </button>
                                </Show>
                                <Show when=hands_over>
                                    {
                                        let user = for_handover.clone();
                                        let asking = {
                                            let user = user.clone();
                                            move || confirming.get().as_ref() == Some(&user)
                                        };
                                        let ask = {
                                            let user = user.clone();
                                            move |_| confirming.set(Some(user.clone()))
                                        };
                                        let confirm = {
                                            let user = user.clone();
                                            move |_| hand_over(user.clone())
                                        };
                                        let label = handover_label.clone();
                                        let question = confirm_text.clone();
                                        view! {
                                            <Show
                                                when=asking
                                                fallback=move || view! {
                                                    <button class="link-button hand-over" aria-label=label.clone() on:click=ask.clone()>
                                                        "Hand over"
                                                    </button>
                                                }.erase()
                                            >
                                                <span class="confirm-hand-over" role="group" aria-label=question.clone()>
                                                    <span>{question.clone()}</span>
                                                    <button class="button small confirm" on:click=confirm.clone()>"Yes, hand over"</button>
                                                    <button class="button small secondary" on:click=move |_| confirming.set(None)>"Cancel"</button>
                                                </span>
                                            </Show>
                                        }
                                        .erase()
                                    }
                                </Show>
                            </li>
                        }
                        .erase()
                    }
                />
            </ul>
            <Show when=move || members.with(Vec::is_empty)>
                <p class="muted">"Nobody else yet. People join through an invite link."</p>
            </Show>
            <Notices model place=Place::Field("members".into())/>
        </section>
    }
    .erase()
}
