//! Code that loads after the page: parts a person reaches for later (the history and access
//! panels, the settings editor, the live room, the browser's media engine) are, in a `cargo leptos build --split`
//! site, WebAssembly files of their own, fetched when first needed.
//!
//! Fetching can fail — the connection drops at that moment, a deploy replaced the files. Leptos's
//! `#[lazy]` then panics, and a panic stops the page's WebAssembly: everything on the page dies,
//! including what someone was typing. A function declared with [`loaded_later!`] instead returns
//! [`CodeNotLoaded`], the caller says so and offers to try again, and trying again fetches afresh
//! (the split loader remembers only successful loads). The client-side-only build (trunk, which
//! cannot split) runs the same functions directly.
//!
//! The other pages (landing, invite, ops: `app.rs`) are Leptos lazy routes, loaded before their
//! page hydrates; their loader has no fallible form, and a page that cannot get its code stays
//! server-rendered HTML until reloaded.

use std::future::Future;
use std::pin::Pin;

use send_wrapper::SendWrapper;

/// A part of the page whose code did not arrive. Trying again may work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeNotLoaded;

impl std::fmt::Display for CodeNotLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this part of the page could not be loaded")
    }
}

impl std::error::Error for CodeNotLoaded {}

impl From<leptos::wasm_split::SplitLoaderError> for CodeNotLoaded {
    fn from(_: leptos::wasm_split::SplitLoaderError) -> Self {
        CodeNotLoaded
    }
}

/// What the body of a function declared with [`loaded_later!`] returns: a future, boxed as a
/// split point must return it (single-threaded in the browser, hence the wrapper). Callers just
/// `.await` the function.
pub type Loading<T> = Pin<Box<dyn Future<Output = Result<T, CodeNotLoaded>> + Send + Sync>>;

#[doc(hidden)]
pub fn boxed<T: 'static>(
    future: impl Future<Output = Result<T, CodeNotLoaded>> + 'static,
) -> Loading<T> {
    Box::pin(SendWrapper::new(future))
}

/// Declares `fn name(args)`, called as `name(args).await` for a `Result<T, CodeNotLoaded>`, whose
/// body is WebAssembly of its own, `pkg/split_<module>.<hash>.wasm` (so `module` must be unique in
/// the program). The body is an async block's body that ends in `Ok(…)` (or an error, when
/// something it loads in turn did not arrive: `?` works).
#[macro_export]
macro_rules! loaded_later {
    ($(#[$attr:meta])* $module:ident: $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $out:ty $body:block) => {
        $(#[$attr])*
        #[cfg_attr(not(feature = "csr"), ::leptos::wasm_split::wasm_split(
            $module,
            wasm_split_path = ::leptos::wasm_split,
            fallible,
            return_wrapper(let future = _; { future.await } -> ::core::result::Result<$out, $crate::client::later_code::CodeNotLoaded>)
        ))]
        $vis fn $name($($arg: $ty),*) -> $crate::client::later_code::Loading<$out> {
            $crate::client::later_code::boxed(async move $body)
        }
    };
}
