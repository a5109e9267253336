use leptos::prelude::*;

/// Shown for every path no route matches; on the server it also sets the status to 404.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <leptos_meta::Title text="Page not found — Rally"/>
        <section class="not-found">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. "<a href="/">"Back to the start"</a></p>
        </section>
    }
}
