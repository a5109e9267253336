//! The browser entry point. Built by cargo-leptos with `hydrate` (take over the server-rendered
//! page) and by trunk with `csr` (render the whole app client-side, for frontend-only iteration).
//! Either way the app gets the browser's I/O ([`browser::WebBrowser`]), a way to load its cameras
//! and WebRTC ([`media::WebMedia`], on first use) and one live connection as context before it
//! renders.

mod browser;
mod media;

use std::rc::Rc;

use leptos::prelude::*;
use rally_app::client::later_code::CodeNotLoaded;
use rally_app::client::media::LocalFuture;
use rally_app::client::{BrowserIo, Connection, MediaEngine, MediaLoader, SharedIo};

/// Which kind of build this is, for the server to compare with its own at start-up: a release
/// server cannot hydrate a debug site, nor the other way round, and a page that never hydrates
/// looks alive but is dead. A WebAssembly custom section survives wasm-bindgen and wasm-opt.
#[cfg(target_arch = "wasm32")]
#[used]
#[link_section = "rally_build"]
static BUILD_PROFILE: [u8; 7] = if cfg!(debug_assertions) {
    *b"debug  "
} else {
    *b"release"
};

/// Type-erased: the app's full view type inside `hydrate_lazy`'s future overflows the compiler's
/// query depth in release builds. Erased with Leptos's own `into_any`, which keeps asynchronous
/// hydration: the router below waits for a lazy route's code before it hydrates the route. The
/// app erases its own views without it (`rally_app`'s `pages/erase.rs`).
fn app_with_browser() -> AnyView {
    let io: Rc<dyn BrowserIo> = Rc::new(browser::WebBrowser);
    provide_context::<SharedIo>(send_wrapper::SendWrapper::new(io.clone()));
    provide_context(Connection::start(io));
    let load_media: Rc<dyn Fn() -> LocalFuture<Result<Rc<dyn MediaEngine>, CodeNotLoaded>>> =
        Rc::new(|| Box::pin(web_media()));
    provide_context::<MediaLoader>(send_wrapper::SendWrapper::new(load_media));
    view! { <rally_app::App/> }.into_any()
}

rally_app::loaded_later! {
    /// Cameras and WebRTC load when someone first joins a live room: made here, the engine's
    /// code is reachable only through this function.
    web_media: fn web_media() -> Rc<dyn MediaEngine> {
        let engine: Rc<dyn MediaEngine> = Rc::new(media::WebMedia::default());
        Ok(engine)
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    // Lazy: a page whose code is split off (see rally_app::app) waits for it before hydrating.
    leptos::mount::hydrate_lazy(app_with_browser);
}

#[cfg(feature = "csr")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app_with_browser);
}
