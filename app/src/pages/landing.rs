use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use super::before_hydration::{interactive, keep_typed};
use super::SignIn;
use crate::client::SharedIo;
use crate::data::{decode_response, DataSource};
use crate::model::{CampaignId, Role, Visibility};
use crate::pages::erase::Erase;
use crate::protocol::campaign::CampaignSnapshot;

/// The start page: who you are, your campaigns, the recently changed ones you may see, and a
/// form to start a new one. Rendered on the
/// server with real data; the forms work once hydrated.
#[component]
pub fn Landing() -> impl IntoView {
    let source = DataSource::from_context();
    let session = {
        let source = source.clone();
        Resource::new(|| (), move |_| source.session())
    };
    let campaigns = Resource::new(|| (), move |_| source.campaigns());

    view! {
        <leptos_meta::Title text="Rally — live campaign rooms"/>
        <section class="landing">
            <h1>"Rally"</h1>
            <p class="lead">
                "Open a campaign, edit it together and see every change from everyone at once. "
                "Go live with camera and microphone through Rally's own media relay."
            </p>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    match session.await {
                        Some(user) => view! {
                            <p class="signed-in">"Signed in as " <strong>{user.display_name}</strong></p>
                            <CreateCampaign/>
                        }.erase(),
                        None => view! { <SignIn/> }.erase(),
                    }
                })}
            </Suspense>
            <OpenCampaign/>
            <Suspense fallback=|| view! { <p class="loading">"Loading campaigns…"</p> }>
                {move || Suspend::new(async move {
                    let signed_in = session.await.is_some();
                    match campaigns.await {
                        Ok(list) if list.is_empty() => view! {
                            <h2>"Recently changed"</h2>
                            <p class="empty">
                                {if signed_in {
                                    "No campaigns yet. Create the first one above."
                                } else {
                                    "No campaigns yet. Sign in above, then create the first one."
                                }}
                            </p>
                        }.erase(),
                        Ok(mut list) => {
                            list.sort_by_key(|c| std::cmp::Reverse(c.updated_at));
                            let (yours, others): (Vec<_>, Vec<_>) =
                                list.into_iter().partition(|c| c.your_role.is_some());
                            view! {
                                {(!yours.is_empty()).then(|| view! {
                                    <h2>"Your campaigns"</h2>
                                    <Folded list=yours class="your-campaigns"/>
                                })}
                                {(!others.is_empty()).then(|| view! {
                                    <h2>"Recently changed"</h2>
                                    <Folded list=others class="recent-campaigns"/>
                                })}
                            }.erase()
                        }
                        Err(error) => view! { <p class="error">{error.message}</p> }.erase(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// Campaigns listed before "N more".
const RECENT_SHOWN: usize = 12;

/// The first [`RECENT_SHOWN`] campaigns of `list`, the rest folded under "N more".
#[component]
fn Folded(
    mut list: Vec<crate::protocol::campaign::CampaignSummary>,
    class: &'static str,
) -> impl IntoView {
    let rest = list.split_off(list.len().min(RECENT_SHOWN));
    view! {
        <div class=class>
            <CampaignList list/>
            {(!rest.is_empty()).then(|| view! {
                <details class="more-campaigns">
                    <summary>{format!("{} more", rest.len())}</summary>
                    <CampaignList list=rest/>
                </details>
            })}
        </div>
    }
}

#[component]
fn CampaignList(list: Vec<crate::protocol::campaign::CampaignSummary>) -> impl IntoView {
    view! {
        <ul class="campaign-list">
            {list.into_iter().map(|c| view! {
                <li class="campaign-row" data-campaign=c.id.to_string()>
                    <a href=format!("/campaigns/{}", c.id)>{c.title}</a>
                    <span class=format!("status status-{}", c.status)>{c.status.as_str()}</span>
                    {match c.visibility {
                        Visibility::Public => None,
                        Visibility::Unlisted => Some("anyone with the link"),
                        Visibility::Private => Some("members only"),
                    }
                    .map(|words| view! { <span class="visibility-tag">{words}</span> })}
                    <span class="owner">
                        {match c.your_role {
                            Some(Role::Owner) => format!("by {} · you run it", c.owner),
                            Some(Role::Editor) => format!("by {} · you edit", c.owner),
                            Some(Role::Viewer) => format!("by {} · you watch", c.owner),
                            None => format!("by {}", c.owner),
                        }}
                    </span>
                    <span class="version">
                        {match c.version - 1 {
                            0 => "no changes yet".to_owned(),
                            1 => "1 change".to_owned(),
                            n => format!("{n} changes"),
                        }}
                    </span>
                </li>
            }).collect_view()}
        </ul>
    }
}

/// New campaign: an id (checked as you type, with the server's own rules) and a title.
#[component]
fn CreateCampaign() -> impl IntoView {
    let io = use_context::<SharedIo>();
    let navigate = use_navigate();
    let id = RwSignal::new(String::new());
    let title = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let (id_field, title_field) = (NodeRef::new(), NodeRef::new());
    keep_typed(id_field, id);
    keep_typed(title_field, title);
    let ready = interactive();
    let id_error = Memo::new(move |_| {
        let text = id.get();
        (!text.is_empty())
            .then(|| CampaignId::parse(&text).err().map(|e| e.to_string()))
            .flatten()
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(campaign_id) = CampaignId::parse(&id.get_untracked()) else {
            return error.set(Some("enter a valid campaign id".into()));
        };
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        let navigate = navigate.clone();
        let create = crate::model::CreateCampaign {
            campaign_id,
            title: title.get_untracked(),
            description: String::new(),
            status: Default::default(),
            features: Vec::new(),
            config: Default::default(),
            visibility: None,
        };
        let body = serde_json::to_string(&create).expect("a new campaign serializes");
        leptos::task::spawn_local(async move {
            match io.http("POST", "/api/campaigns", Some(body)).await {
                Ok((status, text)) => match decode_response::<CampaignSnapshot>(status, &text) {
                    Ok(created) => navigate(
                        &format!("/campaigns/{}", created.campaign.id),
                        Default::default(),
                    ),
                    Err(e) => error.set(Some(e.message)),
                },
                Err(err) => error.set(Some(err)),
            }
        });
    };
    view! {
        <form class="panel create-campaign" on:submit=submit>
            <h2>"New campaign"</h2>
            <label for="new-campaign-id">"Id"</label>
            <input
                id="new-campaign-id"
                placeholder="spring-launch"
                autocomplete="off"
                node_ref=id_field
                on:input=move |ev| id.set(event_target_value(&ev))
            />
            <label for="new-campaign-title">"Title"</label>
            <input
                id="new-campaign-title"
                placeholder="Spring launch"
                node_ref=title_field
                on:input=move |ev| title.set(event_target_value(&ev))
            />
            <button class="button" type="submit" disabled=move || !ready.get()>"Create"</button>
            {move || id_error.get().map(|e| view! { <p class="error">{e}</p> })}
            {move || error.get().map(|e| view! { <p class="error create-error">{e}</p> })}
        </form>
    }
}

/// Open a campaign by id; the id is checked as you type with the same rules the server enforces.
#[component]
fn OpenCampaign() -> impl IntoView {
    let input = RwSignal::new(String::new());
    let field = NodeRef::new();
    keep_typed(field, input);
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
        <form class="open-campaign" on:submit=|ev| ev.prevent_default()>
            <label for="campaign-id">"Campaign id"</label>
            <input
                id="campaign-id"
                name="campaign-id"
                placeholder="spring-launch"
                autocomplete="off"
                node_ref=field
                on:input=move |ev| input.set(event_target_value(&ev))
            />
            <a
                class="button open-button"
                class:disabled=move || !matches!(verdict.get(), Some(Ok(_)))
                aria-disabled=move || (!matches!(verdict.get(), Some(Ok(_)))).to_string()
                href=target
            >
                "Open"
            </a>
            <p class="field-status" aria-live="polite">
                {move || match verdict.get() {
                    None => view! { <span class="hint">"lowercase letters, digits and '-', up to 63"</span> }.erase(),
                    Some(Ok(_)) => view! { <span class="ok">"looks good"</span> }.erase(),
                    Some(Err(message)) => view! { <span class="error">{message}</span> }.erase(),
                }}
            </p>
        </form>
    }
}
