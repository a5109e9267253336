//! The owner's webhook endpoints: give a web address, and Rally sends it every change of this
//! campaign, signed; see what was sent, what failed and why, and send one again. Owners only;
//! the list comes over HTTP (`GET /api/webhooks?campaign=`), read when the panel appears, after
//! each change made here, and (at most every two seconds) as the campaign changes, so the log
//! shows deliveries as they happen.

use leptos::prelude::*;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::client::SharedIo;
use crate::data::decode_response;
use crate::model::Role;
use crate::pages::erase::Erase;
use crate::protocol::webhooks::{
    CreateWebhook, Delivery, DeliveryState, NewWebhook, Redeliver, WebhookSummary,
};

/// Deliveries shown per endpoint (the server keeps 50).
const SHOWN: usize = 5;
/// The list is read again at most this often while the campaign changes.
const REFRESH_MS: u64 = 2_000;

/// One line about a delivery, in plain words.
fn describe(delivery: &Delivery) -> String {
    let tries = match delivery.attempts {
        0 | 1 => String::new(),
        n => format!(" after {n} tries"),
    };
    let why = delivery
        .last_error
        .as_deref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    match delivery.state {
        DeliveryState::Delivered => format!("Change {} sent{tries}", delivery.version),
        DeliveryState::Retrying => format!(
            "Change {} not taken yet{why}; trying again soon",
            delivery.version
        ),
        DeliveryState::Failed => {
            format!("Change {} could not be sent{tries}{why}", delivery.version)
        }
        DeliveryState::Skipped => format!("Changes missed{why}"),
        DeliveryState::Paused => format!("Paused{why}"),
    }
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Retrying => "retrying",
        DeliveryState::Failed => "failed",
        DeliveryState::Skipped => "skipped",
        DeliveryState::Paused => "paused",
    }
}

#[component]
pub fn WebhooksPanel(model: CampaignModel) -> impl IntoView {
    let io = use_context::<SharedIo>();
    let url = RwSignal::new(String::new());
    let made = RwSignal::new(None::<NewWebhook>);
    let copied = RwSignal::new(false);
    let hooks = RwSignal::new(Vec::<WebhookSummary>::new());
    let failed = move |text: String| model.notice(Place::Field("webhooks".into()), text, None);
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
    let reads = StoredValue::new(0u64);
    let reload = {
        let send = send.clone();
        move || {
            let path = format!("/api/webhooks?campaign={}", model.id.get_value());
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
                    if let Ok(list) = decode_response::<Vec<WebhookSummary>>(status, &body) {
                        hooks.set(list);
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
    // As the campaign changes, deliveries happen: read the log again, at most every 2 s (a
    // read is scheduled for the end of the wait, so the last change's delivery shows too).
    let waiting = StoredValue::new(false);
    Effect::new({
        let reload = reload.clone();
        move |seen: Option<u64>| {
            let version = model.confirmed.with(|c| c.version);
            let has_hooks = hooks.with_untracked(|h| !h.is_empty());
            if seen.is_some_and(|seen| seen != version)
                && has_hooks
                && owner()
                && !waiting.get_value()
            {
                waiting.set_value(true);
                let reload = reload.clone();
                set_timeout(
                    move || {
                        waiting.set_value(false);
                        reload();
                    },
                    std::time::Duration::from_millis(REFRESH_MS),
                );
            }
            version
        }
    });

    let register = {
        let send = send.clone();
        let reload = reload.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let reload = reload.clone();
            let asked = CreateWebhook {
                url: url.get_untracked().trim().to_owned(),
                campaign: Some(model.id.get_value()),
                events: Vec::new(),
            };
            if let Err(error) = asked.check() {
                failed(format!("Could not add the address: {}", error.message));
                return;
            }
            let body = serde_json::to_string(&asked).expect("a webhook request serializes");
            send(
                "POST",
                "/api/webhooks".into(),
                Some(body),
                Box::new(
                    move |status, body| match decode_response::<NewWebhook>(status, &body) {
                        Ok(hook) => {
                            url.set(String::new());
                            copied.set(false);
                            made.set(Some(hook));
                            reload();
                        }
                        Err(error) => {
                            failed(format!("Could not add the address: {}", error.message))
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
            let Some(secret) = made.with_untracked(|m| m.as_ref().map(|m| m.secret.clone())) else {
                return;
            };
            let io = (*io).clone();
            leptos::task::spawn_local(async move {
                if io.copy_text(&secret).await {
                    copied.set(true);
                } else {
                    failed("Could not copy the secret: select it and copy it yourself.".into());
                }
            });
        }
    });
    let remove = Callback::new({
        let send = send.clone();
        let reload = reload.clone();
        move |id: String| {
            let reload = reload.clone();
            send(
                "DELETE",
                format!("/api/webhooks/{id}"),
                None,
                Box::new(move |status, body| {
                    if (200..300).contains(&status) {
                        made.update(|m| {
                            if m.as_ref().is_some_and(|m| m.webhook.id == id) {
                                *m = None;
                            }
                        });
                        reload();
                    } else if let Err(error) = decode_response::<serde_json::Value>(status, &body) {
                        failed(format!("Could not remove the address: {}", error.message));
                    }
                }),
            );
        }
    });
    let resend = Callback::new({
        let send = send.clone();
        let reload = reload.clone();
        move |(id, delivery): (String, Delivery)| {
            let reload = reload.clone();
            let asked = Redeliver {
                campaign_id: delivery.campaign_id,
                version: delivery.version,
            };
            send(
                "POST",
                format!("/api/webhooks/{id}/redeliver"),
                Some(serde_json::to_string(&asked).expect("a redelivery serializes")),
                Box::new(move |status, body| {
                    if (200..300).contains(&status) {
                        reload();
                    } else if let Err(error) = decode_response::<serde_json::Value>(status, &body) {
                        failed(format!("Could not send it again: {}", error.message));
                    }
                }),
            );
        }
    });

    view! {
        <Show when=owner>
            <section class="panel webhooks" aria-labelledby="webhooks-heading">
                <h2 id="webhooks-heading">"Send changes to another system"</h2>
                <p class="muted">
                    "Rally sends every change of this campaign to a web address you give, signed, in order, and tries again when it fails."
                </p>
                <form class="webhook-form" on:submit=register.clone()>
                    <label>
                        "Web address"
                        <input
                            class="webhook-url"
                            type="url"
                            maxlength="2048"
                            placeholder="https://example.com/rally"
                            prop:value=move || url.get()
                            on:input=move |ev| url.set(event_target_value(&ev))
                        />
                    </label>
                    <button class="button small add-webhook" type="submit">"Send changes here"</button>
                </form>
                {move || {
                    made.get().map(|hook| {
                        view! {
                            <div class="new-key" role="status">
                                <p>
                                    "Your system checks each delivery with this secret. Copy it now: it is shown only this once."
                                </p>
                                <code class="webhook-secret key-token">{hook.secret.clone()}</code>
                                <button class="button small secondary copy-secret" type="button" on:click=move |_| copy.run(())>
                                    {move || if copied.get() { "Copied" } else { "Copy secret" }}
                                </button>
                            </div>
                        }
                        .erase()
                    })
                }}
                <Notices model place=Place::Field("webhooks".into())/>
                <Show when=move || hooks.with(|h| !h.is_empty())>
                    <ul class="key-list webhook-list">
                        <For
                            each=move || hooks.get()
                            key=|h| (h.id.clone(), h.deliveries.first().map(|d| (d.version, d.attempts, d.state)))
                            children=move |h: WebhookSummary| {
                                let id = h.id.clone();
                                let label = format!("Stop sending to {}", h.url);
                                let deliveries: Vec<Delivery> = h.deliveries.iter().take(SHOWN).cloned().collect();
                                view! {
                                    <li class="key-item webhook-item" data-webhook-id=h.id.clone()>
                                        <span class="key-item-name">{h.url.clone()}</span>
                                        <span class="muted">{format!("Added by {}", h.created_by.display_name)}</span>
                                        <ul class="deliveries">
                                            {deliveries
                                                .into_iter()
                                                .map(|d| {
                                                    let again = (id.clone(), d.clone());
                                                    let can_resend = d.event_id.is_some() && d.state != DeliveryState::Retrying;
                                                    let label = format!("Send again: change {}", d.version);
                                                    view! {
                                                        <li class="delivery" data-state=state_name(d.state)>
                                                            <span>{describe(&d)}</span>
                                                            {can_resend.then(|| view! {
                                                                <button
                                                                    class="button small secondary resend"
                                                                    aria-label=label
                                                                    on:click=move |_| resend.run(again.clone())
                                                                >
                                                                    "Send again"
                                                                </button>
                                                            })}
                                                        </li>
                                                    }
                                                })
                                                .collect_view()}
                                        </ul>
                                        <button
                                            class="button small secondary remove-webhook"
                                            aria-label=label
                                            on:click=move |_| remove.run(id.clone())
                                        >
                                            "Stop sending"
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
