//! Erasing a view's type (an [`AnyView`]) without compiling its asynchronous hydration.
//!
//! In `tachys` 0.2 an `AnyView` made under the `hydrate` feature keeps, for the type it erases,
//! both ways to hydrate it: synchronously and asynchronously (`hydrate_async`,
//! `tachys/src/view/any_view.rs`). Most view types implement the asynchronous way by walking
//! their children asynchronously, so every erased type brought an asynchronous copy of its whole
//! subtree into the WebAssembly: about 14 % of the frontend's code before wasm-opt
//! (BENCHMARKS.md, "Views erased without their asynchronous hydration").
//!
//! Those copies were compiled but never run. The one place that waits while hydrating is the
//! router: `<Routes>` loads a lazy route's code (`leptos_router` `nested_router.rs`,
//! `join_all(loaders).await`) and then hydrates the route's view synchronously. Split-off
//! panels wait inside a `<Suspense>` after hydration ([`later`](super::campaign::later)). So
//! views are erased through [`HydrateNow`], which hydrates at once even when asked to hydrate
//! asynchronously, and the compiler never generates the asynchronous copies. The browser's root
//! view, above the router, keeps Leptos's `into_any` (`frontend/src/lib.rs`).
//!
//! Two rules follow. Never erase a view with a `<Routes>` inside: hydrated synchronously, its
//! lazy routes would panic ("lazy routes not supported with hydrate_body()"). And erase a view
//! one way only: an `AnyView` updates in place only when the new view has the same type, and
//! `HydrateNow<V>` is not `V`. [`Erase::erase`] is the one way this crate erases a view (a test
//! holds that: Leptos's `into_any` does not appear elsewhere; Leptos's own erasures of
//! fallbacks and routes' views still happen, and cost little).

use leptos::prelude::*;
use leptos::tachys::html::attribute::any_attribute::AnyAttribute;
use leptos::tachys::html::attribute::Attribute;
use leptos::tachys::hydration::Cursor;
use leptos::tachys::ssr::StreamBuilder;
use leptos::tachys::view::add_attr::AddAnyAttr;
use leptos::tachys::view::{Position, PositionState};

/// Erases a view's type, like Leptos's `into_any`, but without its asynchronous hydration.
pub trait Erase {
    /// This view as an [`AnyView`] that hydrates synchronously whichever way it is asked to.
    fn erase(self) -> AnyView;
}

impl<V: RenderHtml> Erase for V {
    fn erase(self) -> AnyView {
        HydrateNow(self).into_any()
    }
}

/// A view that hydrates synchronously when asked to hydrate asynchronously; everything else it
/// passes to the view inside.
struct HydrateNow<V>(V);

impl<V: Render> Render for HydrateNow<V> {
    type State = V::State;

    fn build(self) -> Self::State {
        self.0.build()
    }

    fn rebuild(self, state: &mut Self::State) {
        self.0.rebuild(state)
    }
}

impl<V: RenderHtml> RenderHtml for HydrateNow<V> {
    type AsyncOutput = HydrateNow<V::AsyncOutput>;
    type Owned = HydrateNow<V::Owned>;

    const MIN_LENGTH: usize = V::MIN_LENGTH;
    const EXISTS: bool = V::EXISTS;

    fn dry_resolve(&mut self) {
        self.0.dry_resolve()
    }

    async fn resolve(self) -> Self::AsyncOutput {
        HydrateNow(self.0.resolve().await)
    }

    fn html_len(&self) -> usize {
        self.0.html_len()
    }

    fn to_html_with_buf(
        self,
        buf: &mut String,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0
            .to_html_with_buf(buf, position, escape, mark_branches, extra_attrs)
    }

    fn to_html_async_with_buf<const OUT_OF_ORDER: bool>(
        self,
        buf: &mut StreamBuilder,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0.to_html_async_with_buf::<OUT_OF_ORDER>(
            buf,
            position,
            escape,
            mark_branches,
            extra_attrs,
        )
    }

    fn hydrate<const FROM_SERVER: bool>(
        self,
        cursor: &Cursor,
        position: &PositionState,
    ) -> Self::State {
        self.0.hydrate::<FROM_SERVER>(cursor, position)
    }

    // `hydrate_async` is the trait's own: it calls `hydrate`, above.

    fn into_owned(self) -> Self::Owned {
        HydrateNow(self.0.into_owned())
    }
}

impl<V: AddAnyAttr> AddAnyAttr for HydrateNow<V> {
    type Output<SomeNewAttr: Attribute> = HydrateNow<V::Output<SomeNewAttr>>;

    fn add_any_attr<NewAttr: Attribute>(self, attr: NewAttr) -> Self::Output<NewAttr>
    where
        Self::Output<NewAttr>: RenderHtml,
    {
        HydrateNow(self.0.add_any_attr(attr))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn views_are_erased_only_through_erase() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 10, "read the crate's sources");
        let offenders: Vec<&str> = files
            .iter()
            .filter(|(path, text)| !path.ends_with("/erase.rs") && text.contains(".into_any()"))
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(
            offenders.is_empty(),
            "these files erase views with `into_any`, which compiles their asynchronous hydration; use `Erase::erase`: {offenders:?}"
        );
    }
}
