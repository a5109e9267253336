//! The owner's invite links: make one (who may do what, for how long, for how many people), copy
//! it, and see every link made for the campaign with who used it, withdrawing those that should
//! stop working. Owners only; the list comes over HTTP (it is not part of the campaign everyone
//! follows) and is read again whenever a link is made, used or withdrawn.

use leptos::prelude::*;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::client::SharedIo;
use crate::data::decode_response;
use crate::model::{InviteStatus, Role, Timestamp};
use crate::pages::erase::Erase;
use crate::protocol::invites::{CreateInvite, InviteLinkInfo};

/// The roles an invite link can give, in the words the panel uses.
const INVITE_ROLES: [(Role, &str); 3] = [
    (Role::Viewer, "watch"),
    (Role::Editor, "edit"),
    (Role::Owner, "run it with you"),
];
/// How long an invite link can work, in days.
const INVITE_DAYS: [(u64, &str); 4] = [
    (1, "1 day"),
    (7, "7 days"),
    (14, "14 days"),
    (30, "30 days"),
];
/// How many people may use a link (0: anyone who has it).
const INVITE_USES: [(u32, &str); 4] = [
    (0, "anyone with the link"),
    (1, "one person"),
    (5, "up to 5 people"),
    (25, "up to 25 people"),
];

fn status_name(status: InviteStatus) -> &'static str {
    match status {
        InviteStatus::Open => "open",
        InviteStatus::UsedUp => "used_up",
        InviteStatus::Expired => "expired",
        InviteStatus::Withdrawn => "withdrawn",
    }
}

fn day(at: Timestamp) -> String {
    at.to_string().get(..10).unwrap_or_default().to_owned()
}

/// One line about a link: what it lets people do, how many have used it, whether it still works.
fn summary(link: &InviteLinkInfo) -> String {
    let invite = &link.invite;
    let what = INVITE_ROLES
        .into_iter()
        .find(|(r, _)| *r == invite.terms.role)
        .map_or("edit", |(_, words)| words);
    let used = invite.used;
    let uses = match invite.terms.max_uses {
        Some(max) => format!("{used} of {max} used"),
        None if used == 1 => "used once".to_owned(),
        None => format!("used {used} times"),
    };
    let state = match link.status {
        InviteStatus::Open => format!("works until {}", day(invite.terms.expires_at)),
        InviteStatus::UsedUp => "used up".to_owned(),
        InviteStatus::Expired => "expired".to_owned(),
        InviteStatus::Withdrawn => "withdrawn".to_owned(),
    };
    format!("Can {what} · {uses} · {state}")
}

#[component]
pub fn InvitePanel(model: CampaignModel) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let link = RwSignal::new(None::<String>);
    let copied = RwSignal::new(None::<String>);
    let role = RwSignal::new(Role::Editor);
    let days = RwSignal::new(7u64);
    let uses = RwSignal::new(0u32);
    let links = RwSignal::new(Vec::<InviteLinkInfo>::new());
    let failed = move |text: String| model.notice(Place::Field("invite".into()), text, None);
    let owner = move || model.role.get() == Role::Owner;

    let send = {
        let io = io.clone();
        move |method: &'static str,
              path: String,
              body: Option<String>,
              done: Box<dyn Fn(u16, String)>| {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                match io.http(method, &path, body).await {
                    Ok((status, body)) => done(status, body),
                    Err(_) => failed("The server cannot be reached; try again in a moment.".into()),
                }
            });
        }
    };
    let origin = StoredValue::new(io.as_ref().map(|io| io.origin()).unwrap_or_default());
    // Read the list when the panel appears for an owner, whenever a link changes, and after
    // this page made or withdrew one; only the answer to the latest read is shown.
    let reads = StoredValue::new(0u64);
    let reload = {
        let send = send.clone();
        move || {
            let path = format!("/api/campaigns/{}/invites", model.id.get_value());
            reads.update_value(|n| *n += 1);
            let this_read = reads.get_value();
            send(
                "GET",
                path,
                None,
                Box::new(move |status, body| {
                    if reads.get_value() != this_read {
                        return;
                    }
                    if let Ok(list) = decode_response::<Vec<InviteLinkInfo>>(status, &body) {
                        links.set(list);
                    }
                }),
            );
        }
    };
    Effect::new({
        let reload = reload.clone();
        move |_| {
            model.invites_changed.track();
            if owner() {
                reload();
            }
        }
    });

    let create = {
        let send = send.clone();
        let reload = reload.clone();
        move |_| {
            let reload = reload.clone();
            let asked = CreateInvite {
                role: Some(role.get_untracked()),
                expires_in_secs: Some(days.get_untracked() * 24 * 3600),
                max_uses: Some(uses.get_untracked()).filter(|n| *n > 0),
            };
            let body = serde_json::to_string(&asked).expect("an invite request serializes");
            let path = format!("/api/campaigns/{}/invites", model.id.get_value());
            let origin = origin.get_value();
            send(
                "POST",
                path,
                Some(body),
                Box::new(move |status, body| {
                    match decode_response::<InviteLinkInfo>(status, &body) {
                        Ok(made) => {
                            copied.set(None);
                            link.set(Some(format!("{origin}{}", made.path)));
                            reload();
                        }
                        Err(error) => failed(format!(
                            "Could not create an invite link: {}",
                            error.message
                        )),
                    }
                }),
            );
        }
    };
    let copy = Callback::new({
        let io = io.clone();
        move |url: String| {
            let Some(io) = io.clone() else { return };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                if io.copy_text(&url).await {
                    copied.set(Some(url));
                } else {
                    failed("Could not copy the link: select it and copy it yourself.".into());
                }
            });
        }
    });
    let withdraw = Callback::new({
        let send = send.clone();
        let reload = reload.clone();
        move |id: String| {
            let reload = reload.clone();
            let path = format!("/api/campaigns/{}/invites/{id}", model.id.get_value());
            send(
                "DELETE",
                path,
                None,
                Box::new(move |status, body| {
                    if (200..300).contains(&status) {
                        reload();
                    } else if let Err(error) = decode_response::<serde_json::Value>(status, &body) {
                        failed(format!("Could not withdraw the link: {}", error.message));
                    }
                }),
            );
        }
    });

    let choice = move |class: &'static str,
                       options: Vec<(String, &'static str, bool)>,
                       set: Box<dyn Fn(String)>| {
        view! {
            <select class=class on:change=move |ev| { set(event_target_value(&ev)); link.set(None); }>
                {options
                    .into_iter()
                    .map(|(value, words, selected)| view! { <option value=value selected=selected>{words}</option> })
                    .collect_view()}
            </select>
        }
        .erase()
    };
    let sentence = move || {
        let what = INVITE_ROLES
            .into_iter()
            .find(|(r, _)| *r == role.get())
            .map_or("edit", |(_, words)| words);
        let how_long = INVITE_DAYS
            .into_iter()
            .find(|(n, _)| *n == days.get())
            .map_or("7 days", |(_, words)| words);
        let who = match uses.get() {
            0 => "Anyone who opens the link".to_owned(),
            1 => "One person who opens the link".to_owned(),
            n => format!("Up to {n} people who open the link"),
        };
        format!("{who} can {what} for {how_long}.")
    };
    view! {
        <Show when=owner>
            <section class="panel invite" aria-labelledby="invite-heading">
                <h2 id="invite-heading">"Invite people"</h2>
                <div class="invite-choices">
                    <label>
                        "They can "
                        {choice(
                            "invite-role",
                            INVITE_ROLES.into_iter().map(|(r, w)| (r.as_str().to_owned(), w, r == Role::Editor)).collect(),
                            Box::new(move |chosen| {
                                if let Some((r, _)) = INVITE_ROLES.into_iter().find(|(r, _)| r.as_str() == chosen) {
                                    role.set(r);
                                }
                            }),
                        )}
                    </label>
                    <label>
                        "for "
                        {choice(
                            "invite-days",
                            INVITE_DAYS.into_iter().map(|(n, w)| (n.to_string(), w, n == 7)).collect(),
                            Box::new(move |chosen| {
                                if let Ok(n) = chosen.parse() {
                                    days.set(n);
                                }
                            }),
                        )}
                    </label>
                    <label>
                        "Who: "
                        {choice(
                            "invite-uses",
                            INVITE_USES.into_iter().map(|(n, w)| (n.to_string(), w, n == 0)).collect(),
                            Box::new(move |chosen| {
                                if let Ok(n) = chosen.parse() {
                                    uses.set(n);
                                }
                            }),
                        )}
                    </label>
                </div>
                <p class="muted">{sentence}</p>
                <button class="button small create-invite" on:click=create.clone()>
                    {move || if link.with(Option::is_some) { "Create a new link" } else { "Create invite link" }}
                </button>
                {move || {
                    link.get().map(move |url| {
                        let label = url.clone();
                        let target = url.clone();
                        view! {
                            <p class="invite-link"><a href=url.clone()>{label}</a></p>
                            <button class="button small secondary copy-invite" on:click=move |_| copy.run(target.clone())>
                                {move || if copied.get().as_deref() == Some(url.as_str()) { "Copied" } else { "Copy link" }}
                            </button>
                        }
                        .erase()
                    })
                }}
                <Notices model place=Place::Field("invite".into())/>
                <Show when=move || links.with(|l| !l.is_empty())>
                    <h3 class="invite-links-heading">"Links made for this campaign"</h3>
                    <ul class="invite-links">
                        <For
                            each=move || links.get()
                            key=|l| (l.invite.terms.id.clone(), l.status, l.invite.used)
                            children=move |l: InviteLinkInfo| {
                                    let open = l.status == InviteStatus::Open;
                                    let url = format!("{}{}", origin.get_value(), l.path);
                                    let id = l.invite.terms.id.to_string();
                                    let users = l.invite.uses.iter().map(|u| u.display_name.clone()).collect::<Vec<_>>().join(", ");
                                    let copy_url = url.clone();
                                    view! {
                                        <li class="invite-item" data-status=status_name(l.status)>
                                            <span class="invite-summary">{summary(&l)}</span>
                                            {(!users.is_empty()).then(|| view! { <span class="invite-users muted">{format!("Joined: {users}")}</span> })}
                                            {open.then(|| view! {
                                                <span class="invite-actions">
                                                    <button class="button small secondary copy-link" on:click=move |_| copy.run(copy_url.clone())>
                                                        {move || if copied.get().as_deref() == Some(url.as_str()) { "Copied" } else { "Copy" }}
                                                    </button>
                                                    <button class="button small secondary withdraw-invite" on:click=move |_| withdraw.run(id.clone())>
                                                        "Withdraw"
                                                    </button>
                                                </span>
                                            }.erase())}
                                        </li>
                                    }
                                    .erase()
                            }
                        />
                    </ul>
                </Show>
            </section>
        </Show>
    }
    .erase()
}
