//! What a person does between seeing a server-rendered page and its code running (a slow
//! network, a split-off page's WebAssembly still loading) is neither lost nor misread:
//!
//! - Text typed into a form field is kept. A `prop:value` binding would overwrite it when the
//!   field hydrates (hydrating a property sets it), so these fields carry no value binding: the
//!   server renders their starting text as the `value` attribute, `on:input` follows the typing,
//!   and [`keep_typed`] reads what is already there once the field is hydrated.
//! - Buttons that need the code are disabled until this part of the page is hydrated
//!   ([`interactive`]): a click before then would submit the form natively (a GET of the same
//!   page) or do nothing, and the person would not know why.

use leptos::html::Input;
use leptos::prelude::*;

/// False in server-rendered HTML; true once the component that calls it is hydrated. An
/// effect runs only in the browser and only after its owner was built, so this is honest for
/// the part of the page it is created in — unlike a flag set at the root, which can flip while
/// a `<Suspense>` further down is still hydrating.
///
/// Call it in the same component or `<Suspense>` section as the button it enables: hydrating
/// takes a server-rendered attribute as it is, so a button that hydrated after this turned true
/// would keep the server's `disabled` for good.
pub fn interactive() -> Signal<bool> {
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    hydrated.into()
}

/// Copies into `value` what the person typed into `field` before it was hydrated (the field
/// must not bind `prop:value`, see the module doc).
pub fn keep_typed(field: NodeRef<Input>, value: RwSignal<String>) {
    Effect::new(move |_| {
        if let Some(input) = field.get() {
            let typed = input.value();
            if typed != value.get_untracked() {
                value.set(typed);
            }
        }
    });
}
