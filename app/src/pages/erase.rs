//! Erasing a view's type (an [`AnyView`]) without compiling its asynchronous hydration.
//!
//! In `tachys` 0.2 an `AnyView` made under the `hydrate` feature keeps, for the type it erases,
//! both ways to hydrate it: synchronously and asynchronously (`hydrate_async`,
//! `tachys/src/view/any_view.rs`). The asynchronous way exists for views that must wait before
//! they can hydrate — a lazy route whose code is still loading — and most view types
//! implement it by walking their children asynchronously, so every erased type brought the
//! asynchronous copy of its whole subtree into the WebAssembly: about 14 % of the frontend's code
//! before wasm-opt (BENCHMARKS.md, "Why 250 KB Brotli is out of reach").
//!
//! No Rally view needs it. The lazy routes wait in the router, which loads a route's code before
//! it hydrates the route's view (`leptos_router` `ChooseView::choose`); split-off panels wait
//! inside a `<Suspense>` after hydration ([`later`](super::campaign)). So views are erased
//! through [`HydrateNow`], which hydrates at once even when asked to hydrate asynchronously, and
//! the compiler never generates the asynchronous copies. [`Erase::erase`] is the one way this
//! crate erases a view (a test holds that: Leptos's `into_any` does not appear elsewhere).

use leptos::prelude::*;
use leptos::tachys::html::attribute::any_attribute::AnyAttribute;
use leptos::tachys::html::attribute::Attribute;
use leptos::tachys::hydration::Cursor;
use leptos::tachys::ssr::StreamBuilder;
use leptos::tachys::view::add_attr::AddAnyAttr;
use leptos::tachys::view::{Position, PositionState};

/// Erases a view's type, like Leptos's `into_any`, but without its asynchronous hydration.
pub trait Erase {
    fn erase(self) -> AnyView;
}

impl<V: RenderHtml + Send> Erase for V {
    fn erase(self) -> AnyView {
        HydrateNow(self).into_any()
    }
}

/// A view that hydrates synchronously when asked to hydrate asynchronously; everything else it
/// passes to the view inside.
pub struct HydrateNow<V>(V);

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
            .filter(|(path, text)| !path.ends_with("erase.rs") && text.contains(".into_any()"))
            .map(|(path, _)| path.as_str())
            .collect();
        assert!(
            offenders.is_empty(),
            "these files erase views with `into_any`, which compiles their asynchronous hydration; use `Erase::erase`: {offenders:?}"
        );
    }
}
