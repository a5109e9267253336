use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};

use super::before_hydration::interactive;
use super::SignIn;
use crate::client::SharedIo;
use crate::data::{decode_response, DataSource};
use crate::model::Role;
use crate::pages::erase::Erase;
use crate::protocol::{ErrorBody, ErrorCode};

/// `/invite/:token`: accept an owner's invite and take the role it offers in the campaign.
#[component]
pub fn InvitePage() -> impl IntoView {
    let params = use_params_map();
    let source = DataSource::from_context();
    let session = {
        let source = source.clone();
        Resource::new(|| (), move |_| source.session())
    };
    let io = use_context::<SharedIo>();
    let navigate = use_navigate();
    let error = RwSignal::new(None::<String>);
    let accept = move |_| {
        let token = params.read_untracked().get("token").unwrap_or_default();
        let Some(io) = io.clone() else { return };
        let io = (*io).clone();
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            match io
                .http("POST", &format!("/api/invites/{token}/accept"), None)
                .await
            {
                Ok((status, text)) => match decode_response::<serde_json::Value>(status, &text) {
                    Ok(accepted) => {
                        let id = accepted["campaign_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        navigate(&format!("/campaigns/{id}"), Default::default());
                    }
                    Err(e) => error.set(Some(why_not(&e))),
                },
                Err(_) => error.set(Some(
                    "The server cannot be reached; try again in a moment.".to_owned(),
                )),
            }
        });
    };
    let details = Resource::new(
        move || params.read().get("token").unwrap_or_default(),
        move |token| source.invite(token),
    );
    view! {
        <leptos_meta::Title text="Invitation — Rally"/>
        <section class="invite-page">
            <Suspense fallback=|| view! { <h1>"You are invited to a campaign"</h1> }>
                {move || Suspend::new(async move {
                    match details.await {
                        Ok(invite) => {
                            let who = format!("{} invites you", invite.invited_by);
                            let (verb, can) = match invite.role {
                                Role::Viewer => ("watch", "As a viewer you see every change as it happens and can join the live room. "),
                                Role::Editor => ("edit", "As an editor you can change its title, description, features and settings, and go live. "),
                                Role::Owner => ("run", "As an owner you can change everything, invite people and manage its members. "),
                            };
                            view! {
                                <h1>{format!("{who} to {verb} “{}”", invite.title)}</h1>
                                <p class="muted">
                                    {can}
                                    {format!("The link works until {}.", invite.expires_at.to_string().get(..10).unwrap_or_default())}
                                    {match invite.uses_left {
                                        Some(1) => " Only one more person can use it.".to_owned(),
                                        Some(n) => format!(" {n} more people can use it."),
                                        None => String::new(),
                                    }}
                                </p>
                            }
                            .erase()
                        }
                        Err(error) => view! {
                            <h1>"This invite link does not work"</h1>
                            <p class="error">{why_not(&error)}</p>
                        }
                        .erase(),
                    }
                })}
            </Suspense>
            <Suspense fallback=|| ()>
                {
                    let accept = accept.clone();
                    move || {
                        let accept = accept.clone();
                        Suspend::new(async move {
                            if details.await.is_err() {
                                return ().erase();
                            }
                            match session.await {
                                Some(user) => {
                                    // Made here, where the button is: it hydrates with this
                                    // section, which may be after the rest of the page.
                                    let ready = interactive();
                                    view! {
                                        <p>"Signed in as " <strong>{user.display_name}</strong></p>
                                        <button class="button accept-invite" disabled=move || !ready.get() on:click=accept>"Accept and open it"</button>
                                    }.erase()
                                }
                                None => view! { <p>"First, sign in."</p> <SignIn/> }.erase(),
                            }
                        })
                    }
                }
            </Suspense>
            {move || error.get().map(|e| view! { <p class="error">{e}</p> })}
        </section>
    }
}

/// Why a link does not work, in plain words (the server's reason, without its jargon).
fn why_not(error: &ErrorBody) -> String {
    let message = error.message.as_str();
    let ask = "Ask the campaign's owner for a new one.";
    match error.code {
        ErrorCode::NotFound => {
            return format!(
                "The campaign it leads to does not exist any more, or you may not see it. {ask}"
            )
        }
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::RateLimited => {
            return "Rally cannot answer right now; try again in a moment.".to_owned()
        }
        ErrorCode::LimitExceeded => {
            return "The campaign has as many members as it can take.".to_owned()
        }
        _ => {}
    }
    if message.contains("malformed") || message.contains("signature") {
        return format!(
            "The link is incomplete or was changed: copy the whole link and try again, or {}",
            ask.to_lowercase()
        );
    }
    if message.contains("has expired") && !message.contains("invite link") {
        return format!("It has expired. {ask}");
    }
    let reason = message.trim_start_matches("invite rejected: ");
    let mut chars = reason.chars();
    let reason = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    if reason.contains("ask") {
        format!("{reason}.")
    } else {
        format!("{reason}. {ask}")
    }
}

#[cfg(test)]
mod tests {
    use super::why_not;
    use crate::protocol::{ErrorBody, ErrorCode};

    #[test]
    fn reasons_read_as_sentences_without_jargon() {
        let invalid = |message: &str| ErrorBody::new(ErrorCode::Invalid, message);
        let cases = [
            ("invite rejected: token is malformed", "The link is incomplete or was changed: copy the whole link and try again, or ask the campaign's owner for a new one."),
            ("invite rejected: token has expired", "It has expired. Ask the campaign's owner for a new one."),
            ("this invite link was withdrawn by an owner; ask them for a new one", "This invite link was withdrawn by an owner; ask them for a new one."),
            ("the person who made it is no longer an owner", "The person who made it is no longer an owner. Ask the campaign's owner for a new one."),
        ];
        for (message, shown) in cases {
            assert_eq!(why_not(&invalid(message)), shown);
        }
        let missing = ErrorBody::new(ErrorCode::NotFound, "campaign x does not exist");
        assert!(why_not(&missing).starts_with("The campaign it leads to does not exist"));
        let down = ErrorBody::new(
            ErrorCode::Unavailable,
            "cannot read the campaign: storage unavailable",
        );
        assert_eq!(
            why_not(&down),
            "Rally cannot answer right now; try again in a moment."
        );
    }
}
