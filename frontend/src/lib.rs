//! The browser entry point. Built by cargo-leptos with `hydrate` (take over the server-rendered
//! page) and by trunk with `csr` (render the whole app client-side, for frontend-only iteration).

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(rally_app::App);
}

#[cfg(feature = "csr")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(rally_app::App);
}
