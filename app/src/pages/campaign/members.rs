//! Who belongs to the campaign: its creator (who always owns it) and the members, with their
//! roles. Owners change a member's role or remove them; everyone else reads the list. People
//! become members by accepting an invite link.

use leptos::prelude::*;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::model::{Member, MemberChange, Role, UserId, Write};

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
    let creator = move || model.shown.with(|s| s.created_by.display_name.clone());
    let manages = move || model.role.get() == Role::Owner && model.can_edit();
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
                <li class="member" data-role="owner">
                    <span class="member-name">{creator}</span>
                    <span class="role-badge">"owner · created it"</span>
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
                        view! {
                            <li class="member" data-user=id.to_string() data-role=role.as_str()>
                                <span class="member-name">{name}</span>
                                <Show
                                    when=manages
                                    fallback=move || view! { <span class="role-badge">{role.as_str()}</span> }.into_any()
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
                            </li>
                        }
                        .into_any()
                    }
                />
            </ul>
            <Show when=move || members.with(Vec::is_empty)>
                <p class="muted">"Nobody else yet. People join through an invite link."</p>
            </Show>
            <Notices model place=Place::Field("members".into())/>
        </section>
    }
    .into_any()
}
