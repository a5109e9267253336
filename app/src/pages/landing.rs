use leptos::prelude::*;

use crate::model::CampaignId;

/// The start page: what Rally is, and a field to open a campaign by id. The id is checked as you
/// type with the same [`CampaignId`] rules the server enforces.
#[component]
pub fn Landing() -> impl IntoView {
    let input = RwSignal::new(String::new());
    let verdict = Memo::new(move |_| {
        let text = input.get();
        if text.is_empty() {
            None
        } else {
            Some(CampaignId::parse(&text).map_err(|err| err.to_string()))
        }
    });
    let target = move || match verdict.get() {
        Some(Ok(id)) => format!("/campaigns/{id}"),
        _ => String::new(),
    };

    view! {
        <section class="landing">
            <h1>"Rally"</h1>
            <p class="lead">
                "Open a campaign, edit it together and see every change from everyone at once. "
                "Go live with camera and microphone through Rally's own media relay."
            </p>
            <form class="open-campaign" on:submit=|ev| ev.prevent_default()>
                <label for="campaign-id">"Campaign id"</label>
                <input
                    id="campaign-id"
                    name="campaign-id"
                    placeholder="spring-launch"
                    autocomplete="off"
                    prop:value=move || input.get()
                    on:input=move |ev| input.set(event_target_value(&ev))
                />
                <a
                    class="button"
                    class:disabled=move || !matches!(verdict.get(), Some(Ok(_)))
                    href=target
                >
                    "Open"
                </a>
                <p class="field-status" aria-live="polite">
                    {move || match verdict.get() {
                        None => view! { <span class="hint">"lowercase letters, digits and '-', up to 63"</span> }.into_any(),
                        Some(Ok(_)) => view! { <span class="ok">"looks good"</span> }.into_any(),
                        Some(Err(message)) => view! { <span class="error">{message}</span> }.into_any(),
                    }}
                </p>
            </form>
        </section>
    }
}
