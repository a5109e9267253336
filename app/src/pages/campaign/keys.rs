//! The owner's keys for other systems: make one that lets a website, a CMS or a script read this
//! campaign (or read and change it) without anyone signing in, copy it the one time it is shown,
//! and see and revoke the keys that reach the campaign. Owners only; the list comes over HTTP
//! (`GET /api/keys?campaign=`), read when the panel appears, after each change made here, and
//! when a key changes the campaign (its last use moved).

use leptos::prelude::*;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::client::SharedIo;
use crate::data::decode_response;
use crate::model::Role;
use crate::pages::erase::Erase;
use crate::pages::session::time_ago;
use crate::protocol::api_keys::{ApiKeySummary, CreateApiKey, KeyAccess, NewApiKey};

/// What a key may do, in the words the panel uses.
fn can(access: KeyAccess) -> &'static str {
    match access {
        KeyAccess::Read => "Can read",
        KeyAccess::Write => "Can read and change",
    }
}

#[component]
pub fn KeysPanel(model: CampaignModel) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let name = RwSignal::new(String::new());
    let access = RwSignal::new(KeyAccess::Read);
    let made = RwSignal::new(None::<NewApiKey>);
    let copied = RwSignal::new(false);
    let keys = RwSignal::new(Vec::<ApiKeySummary>::new());
    let failed = move |text: String| model.notice(Place::Field("keys".into()), text, None);
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
    // Only the answer to the latest read is shown.
    let reads = StoredValue::new(0u64);
    let reload = {
        let send = send.clone();
        move || {
            let path = format!("/api/keys?campaign={}", model.id.get_value());
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
                    if let Ok(list) = decode_response::<Vec<ApiKeySummary>>(status, &body) {
                        keys.set(list);
                    }
                }),
            );
        }
    };
    Effect::new({
        let reload = reload.clone();
        move |_| {
            if owner() {
                reload();
            }
        }
    });
    // A change made with a key: its "last used" moved, so read the list again.
    Effect::new({
        let reload = reload.clone();
        move |seen: Option<u64>| {
            let (version, by_key) = model.confirmed.with(|c| {
                (
                    c.version,
                    c.updated_by.user_id.as_str().starts_with("apikey-"),
                )
            });
            if seen.is_some_and(|seen| seen != version) && by_key && owner() {
                reload();
            }
            version
        }
    });

    let create = {
        let send = send.clone();
        let reload = reload.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let reload = reload.clone();
            let asked = CreateApiKey {
                name: name.get_untracked(),
                access: access.get_untracked(),
                campaigns: vec![model.id.get_value()],
                all_campaigns: false,
            };
            if let Err(error) = asked.checked() {
                failed(format!("Could not create the key: {}", error.message));
                return;
            }
            let body = serde_json::to_string(&asked).expect("a key request serializes");
            send(
                "POST",
                "/api/keys".into(),
                Some(body),
                Box::new(
                    move |status, body| match decode_response::<NewApiKey>(status, &body) {
                        Ok(key) => {
                            // What was typed went into the key: the field is free for the next one.
                            name.set(String::new());
                            copied.set(false);
                            made.set(Some(key));
                            reload();
                        }
                        Err(error) => {
                            failed(format!("Could not create the key: {}", error.message))
                        }
                    },
                ),
            );
        }
    };
    let copy = Callback::new({
        let io = io.clone();
        move |()| {
            let Some(io) = io.clone() else { return };
            let Some(token) = made.with_untracked(|m| m.as_ref().map(|m| m.token.clone())) else {
                return;
            };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                if io.copy_text(&token).await {
                    copied.set(true);
                } else {
                    failed("Could not copy the key: select it and copy it yourself.".into());
                }
            });
        }
    });
    let revoke = Callback::new({
        let send = send.clone();
        let reload = reload.clone();
        move |id: String| {
            let reload = reload.clone();
            send(
                "DELETE",
                format!("/api/keys/{id}"),
                None,
                Box::new(move |status, body| {
                    if (200..300).contains(&status) {
                        made.update(|m| {
                            if m.as_ref().is_some_and(|m| m.key.id == id) {
                                *m = None;
                            }
                        });
                        reload();
                    } else if let Err(error) = decode_response::<serde_json::Value>(status, &body) {
                        failed(format!("Could not revoke the key: {}", error.message));
                    }
                }),
            );
        }
    });
    let clock = StoredValue::new(io);
    let now_ms =
        move || clock.with_value(|io| io.as_ref().map(|io| io.now_ms() as u64).unwrap_or(0));

    view! {
        <Show when=owner>
            <section class="panel keys" aria-labelledby="keys-heading">
                <h2 id="keys-heading">"Keys for other systems"</h2>
                <p class="muted">
                    "A key lets a website, a CMS or a script read this campaign, or change it, without signing in."
                </p>
                <form class="key-form" on:submit=create.clone()>
                    <label>
                        "What will use it"
                        <input
                            class="key-name"
                            type="text"
                            maxlength="40"
                            placeholder="Our website"
                            prop:value=move || name.get()
                            on:input=move |ev| name.set(event_target_value(&ev))
                        />
                    </label>
                    <label>
                        "It can "
                        <select
                            class="key-access"
                            on:change=move |ev| {
                                access.set(if event_target_value(&ev) == "write" { KeyAccess::Write } else { KeyAccess::Read });
                            }
                        >
                            <option value="read" selected=true>"read this campaign"</option>
                            <option value="write">"read and change this campaign"</option>
                        </select>
                    </label>
                    <button class="button small create-key" type="submit">"Create key"</button>
                </form>
                {move || {
                    made.get().map(|key| {
                        view! {
                            <div class="new-key" role="status">
                                <p>
                                    {format!("Your key for {}. Copy it now: it is shown only this once.", key.key.name)}
                                </p>
                                <code class="key-token">{key.token.clone()}</code>
                                <button class="button small secondary copy-key" type="button" on:click=move |_| copy.run(())>
                                    {move || if copied.get() { "Copied" } else { "Copy key" }}
                                </button>
                            </div>
                        }
                        .erase()
                    })
                }}
                <Notices model place=Place::Field("keys".into())/>
                <Show when=move || keys.with(|k| !k.is_empty())>
                    <h3 class="key-list-heading">"Keys made for this campaign"</h3>
                    <ul class="key-list">
                        <For
                            each=move || keys.get()
                            key=|k| (k.id.clone(), k.last_used_at)
                            children=move |k: ApiKeySummary| {
                                let used = match k.last_used_at {
                                    Some(at) => format!("last used {}", time_ago(at, now_ms())),
                                    None => "never used".to_owned(),
                                };
                                let id = k.id.clone();
                                let label = format!("Revoke the key for {}", k.name);
                                view! {
                                    <li class="key-item" data-key-id=k.id.clone()>
                                        <span class="key-item-name">{k.name.clone()}</span>
                                        <span class="muted">
                                            {format!("{} · made by {} · {used}", can(k.access), k.created_by.display_name)}
                                        </span>
                                        <button
                                            class="button small secondary revoke-key"
                                            aria-label=label
                                            on:click=move |_| revoke.run(id.clone())
                                        >
                                            "Revoke"
                                        </button>
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
