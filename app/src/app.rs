use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
#[cfg(not(feature = "csr"))]
use leptos_router::lazy_route;
use leptos_router::{path, Lazy, LazyRoute, SsrMode};

use crate::data::DataSource;
use crate::pages::erase::Erase;
use crate::pages::{
    CampaignPage, ConnectionBadge, InvitePage, Landing, NotFound, OpsPage, UserBadge,
};

/// The HTML document the server renders around [`App`]. Only the server calls this; the browser
/// hydrates the `<body>` in place.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                // cargo-leptos writes the compiled style/ to pkg/ (fingerprinted when the site is);
                // the trunk (CSR) build links its own.
                <HashedStylesheet options=options.clone() id="rally-css"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

/// How people sign in on this server, loaded once per page (pages with a sign-in card read it).
#[derive(Clone, Copy)]
pub struct SignInChoices(pub Resource<crate::protocol::session::SignInOptions>);

/// Who is signed in on this page (None inside: nobody), loaded once per page.
#[derive(Clone, Copy)]
pub struct SignedInUser(pub Resource<Option<crate::model::Actor>>);

/// The whole application: routes and the chrome around them.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser, so this flips once the page is interactive. Tests and
    // people can tell a hydrated page from server-rendered HTML by `data-hydrated`.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let source = DataSource::from_context();
    let session = {
        let source = source.clone();
        Resource::new(|| (), move |_| source.session())
    };
    let sign_in = Resource::new(|| (), move |_| source.sign_in_options());
    provide_context(SignInChoices(sign_in));
    provide_context(SignedInUser(session));

    view! {
        <Title text="Rally"/>
        <Router>
            <div class="app" data-hydrated=move || hydrated.get().to_string()>
                <header class="topbar">
                    <a class="brand" href="/">"Rally"</a>
                    <span class="tagline">"live campaign rooms"</span>
                    <span class="spacer"></span>
                    <Suspense fallback=|| ()>
                        {move || Suspend::new(async move {
                            view! { <UserBadge user=session.await options=sign_in.await/> }
                        })}
                    </Suspense>
                    {view! { <ConnectionBadge/> }.erase()}
                </header>
                <main>
                    <Routes fallback=|| view! { <NotFound/> }.erase()>
                        // Every page renders whole before its first byte goes out (SsrMode::Async):
                        // the status (404 for a missing campaign) is known in time, and parallel
                        // <Suspense> sections cannot stall a half-sent stream (leptos#4851 still
                        // reproduces with out-of-order streaming on 0.8.23: a hardening test
                        // caught one response in ~40 that never finished). The campaign page is
                        // erased without asynchronous hydration (pages/erase.rs); the router
                        // erases it once more, which costs a box.
                        <Route path=path!("/") view={Lazy::<LandingRoute>::new()} ssr=SsrMode::Async/>
                        <Route path=path!("/campaigns/:id") view=|| view! { <CampaignPage/> }.erase() ssr=SsrMode::Async/>
                        <Route path=path!("/invite/:token") view={Lazy::<InviteRoute>::new()} ssr=SsrMode::Async/>
                        <Route path=path!("/ops") view={Lazy::<OpsRoute>::new()} ssr=SsrMode::Async/>
                    </Routes>
                </main>
            </div>
        </Router>
    }
}

// Pages other than a campaign's load their code when first shown: in a site built with
// `cargo leptos build --split` each is a WebAssembly file of its own, fetched before the page
// hydrates (the browser entry point hydrates with `hydrate_lazy`), so the campaign page — the one
// people open from shared links — downloads less. The client-side-only build (trunk, which
// cannot split) keeps them in the one file.
macro_rules! separately_loaded {
    ($route:ident, $page:ident) => {
        struct $route;

        #[cfg(not(feature = "csr"))]
        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            fn view(_this: Self) -> AnyView {
                view! { <$page/> }.erase()
            }
        }

        #[cfg(feature = "csr")]
        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            async fn view(_this: Self) -> AnyView {
                view! { <$page/> }.erase()
            }
        }
    };
}

separately_loaded!(LandingRoute, Landing);
separately_loaded!(InviteRoute, InvitePage);
separately_loaded!(OpsRoute, OpsPage);
