//! The title and description as people type into them together.
//!
//! The element is the source of truth for what the person typed: every `input` event hands its
//! value to the model at once. Other people's edits are put into the element directly (not
//! through a reactive `value`), with the caret moved over them, because a re-render between two
//! keystrokes would lose one of them. Viewers see plain text.

use leptos::prelude::*;
use leptos::web_sys;
use std::rc::Rc;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::client::shared_text::Hold;
use crate::model::{TextEdit, TextField};

/// An input or a textarea: the two have the same text API but no common type in web-sys.
#[derive(Clone)]
enum TextElement {
    Line(web_sys::HtmlInputElement),
    Area(web_sys::HtmlTextAreaElement),
}

impl TextElement {
    fn value(&self) -> String {
        match self {
            TextElement::Line(e) => e.value(),
            TextElement::Area(e) => e.value(),
        }
    }

    fn selection(&self) -> (u32, u32) {
        let (start, end) = match self {
            TextElement::Line(e) => (e.selection_start(), e.selection_end()),
            TextElement::Area(e) => (e.selection_start(), e.selection_end()),
        };
        (
            start.ok().flatten().unwrap_or(0),
            end.ok().flatten().unwrap_or(0),
        )
    }

    fn show(&self, text: &str, selection: (u32, u32)) {
        let (start, end) = selection;
        match self {
            TextElement::Line(e) => {
                e.set_value(text);
                let _ = e.set_selection_range(start, end);
            }
            TextElement::Area(e) => {
                e.set_value(text);
                let _ = e.set_selection_range(start, end);
            }
        }
    }

    /// Briefly highlight the field: someone else just changed it.
    fn flash(&self) {
        let element: &web_sys::HtmlElement = match self {
            TextElement::Line(e) => e,
            TextElement::Area(e) => e,
        };
        let classes = element.class_list();
        let _ = classes.remove_1("flash");
        let _ = element.offset_width(); // restart the animation
        let _ = classes.add_1("flash");
    }
}

/// Character index of a UTF-16 offset (what the DOM counts in) into `text`.
fn char_index(text: &str, utf16: u32) -> usize {
    let mut units = 0usize;
    for (index, c) in text.chars().enumerate() {
        if units >= utf16 as usize {
            return index;
        }
        units += c.len_utf16();
    }
    text.chars().count()
}

/// UTF-16 offset of character index `chars` of `text`.
fn utf16_offset(text: &str, chars: usize) -> u32 {
    text.chars().take(chars).map(char::len_utf16).sum::<usize>() as u32
}

/// Put `edit` (someone else's, already applied to the model's text) into the element, keeping
/// the caret where the person left it relative to their own text.
fn show_edit(element: &TextElement, edit: &TextEdit, text: &str) {
    let before = element.value();
    let (start, end) = element.selection();
    let start = edit.transform_index(char_index(&before, start));
    let end = edit.transform_index(char_index(&before, end));
    element.show(text, (utf16_offset(text, start), utf16_offset(text, end)));
    element.flash();
}

#[component]
pub fn SharedTextField(model: CampaignModel, field: TextField) -> impl IntoView {
    let text = model.text(field);
    let initial = text.with_untracked(|t| t.text().to_owned());
    let label = match field {
        TextField::Title => "Title",
        TextField::Description => "Description",
    };
    let line = NodeRef::<leptos::html::Input>::new();
    let area = NodeRef::<leptos::html::Textarea>::new();
    // Browser only: once the element exists, other people's edits go straight into it.
    Effect::new(move |_| {
        let element = match (line.get(), area.get()) {
            (Some(e), _) => TextElement::Line(e),
            (_, Some(e)) => TextElement::Area(e),
            _ => return,
        };
        // The page may have been edited between rendering and hydrating.
        let shown = text.with_untracked(|t| t.text().to_owned());
        if element.value() != shown {
            element.show(&shown, (0, 0));
        }
        model.on_show(
            field,
            Rc::new(move |edit: &TextEdit, text: &str| show_edit(&element, edit, text)),
        );
    });
    let on_input = move |ev: leptos::ev::Event| model.typed(field, &event_target_value(&ev));
    let editor = move || {
        let initial = initial.clone();
        match field {
            TextField::Title => view! {
                <input
                    node_ref=line
                    id="campaign-title"
                    class="title-input"
                    aria-label=label
                    value=initial
                    on:input=on_input
                />
            }
            .into_any(),
            TextField::Description => view! {
                <textarea
                    node_ref=area
                    id="campaign-description"
                    class="description-input"
                    aria-label=label
                    placeholder="Describe the campaign"
                    on:input=on_input
                >
                    {initial}
                </textarea>
            }
            .into_any(),
        }
    };
    let reader = move || {
        let value = move || text.with(|t| t.text().to_owned());
        match field {
            TextField::Title => view! { <p class="title-text">{value}</p> }.into_any(),
            TextField::Description => view! {
                <p class="description-text">
                    {move || {
                        let v = value();
                        if v.is_empty() { "No description yet.".to_owned() } else { v }
                    }}
                </p>
            }
            .into_any(),
        }
    };
    view! {
        <div class=format!("shared-text {}-field", field.as_str())>
            <Show when=move || model.role.get().can_edit() fallback=reader>
                {editor.clone()}
            </Show>
            <p class="typing-now" aria-live="off">
                {move || model.typing.with(|t| t.get(&field).map(|(name, _)| format!("{name} is typing…")))}
            </p>
            <HoldNotice model field/>
            <Notices model place=Place::Field(field.as_str().into())/>
        </div>
    }
    .into_any()
}

/// What the field says while its text is not being saved.
#[component]
fn HoldNotice(model: CampaignModel, field: TextField) -> impl IntoView {
    let text = model.text(field);
    let hold = move || text.with(|t| t.hold().cloned());
    move || {
        hold().map(|hold| match hold {
            Hold::Invalid(reason) => view! {
                <p class="notice hold">"Not saved yet: " {reason} "."</p>
            }
            .into_any(),
            Hold::Diverged { saved, reason } => view! {
                <div class="notice hold diverged">
                    <p>
                        {format!("Your text here is not saved: {reason}. Everyone else sees ")}
                        <q>{super::notices::ellipsize(&saved, 120)}</q>
                        "."
                    </p>
                    <button class="button small keep-mine" on:click=move |_| model.resolve(field, true)>
                        "Keep mine"
                    </button>
                    <button class="button small secondary use-theirs" on:click=move |_| model.resolve(field, false)>
                        "Use theirs"
                    </button>
                </div>
            }
            .into_any(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_between_utf16_and_characters() {
        let text = "a😀b";
        assert_eq!(char_index(text, 0), 0);
        assert_eq!(char_index(text, 1), 1);
        assert_eq!(char_index(text, 3), 2);
        assert_eq!(char_index(text, 4), 3);
        assert_eq!(char_index(text, 99), 3);
        assert_eq!(utf16_offset(text, 2), 3);
        assert_eq!(utf16_offset(text, 3), 4);
    }
}
