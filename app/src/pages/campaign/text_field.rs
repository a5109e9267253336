//! The title and description as people type into them together.
//!
//! The element is the source of truth for what the person typed: every `input` event hands its
//! value to the model at once. Other people's edits are put into the element directly (not
//! through a reactive `value`), with the caret moved over them, because a re-render between two
//! keystrokes would lose one of them. Viewers see plain text.
//!
//! Where the others are typing is drawn over the field ([`Carets`]): an invisible copy of its text,
//! laid out in the same box with the same font and wrapping and kept at the same scroll position,
//! with a marker in each person's colour between the characters where they last typed.

use leptos::prelude::*;
use leptos::web_sys;
use std::rc::Rc;

use super::live::CampaignModel;
use super::notices::{Notices, Place};
use crate::client::shared_text::Hold;
use crate::model::{TextEdit, TextField};
use crate::pages::erase::Erase;

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

    fn html(&self) -> &web_sys::HtmlElement {
        match self {
            TextElement::Line(e) => e,
            TextElement::Area(e) => e,
        }
    }

    /// Briefly highlight the field: someone else just changed it.
    fn flash(&self) {
        let element = self.html();
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

/// How many colours people's carets come in (`person-0` … in the stylesheet).
const PERSON_COLOURS: u32 = 5;

/// The colour class of `name`: the same on every page, so Ada is the same colour for everyone.
fn person_colour(name: &str) -> String {
    let hash = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("person-{}", hash % PERSON_COLOURS)
}

/// The field's text cut where the carets are: each piece is the text before a caret and whose
/// caret it is; the last piece is the rest of the text, with no caret. A text ending in a line
/// break gets a zero-width space after it: a textarea shows that last empty line, a copy of the
/// text would not.
fn cut_at_carets(text: &str, carets: &[(String, usize)]) -> Vec<(String, Option<String>)> {
    let mut carets = carets.to_vec();
    carets.sort_by_key(|(_, at)| *at);
    let mut pieces = Vec::with_capacity(carets.len() + 1);
    let (mut rest, mut done) = (text, 0);
    for (name, at) in carets {
        let take = at.saturating_sub(done);
        let cut = rest.char_indices().nth(take).map_or(rest.len(), |(i, _)| i);
        pieces.push((rest[..cut].to_owned(), Some(name)));
        rest = &rest[cut..];
        done += take;
    }
    let mut rest = rest.to_owned();
    if text.ends_with('\n') {
        rest.push('\u{200B}');
    }
    pieces.push((rest, None));
    pieces
}

/// "Ada is typing…", "Ada and Bob are typing…", "Ada, Bob and one other are typing…",
/// "Ada, Bob and 2 others are typing…".
fn typing_line(names: &[String]) -> Option<String> {
    let line = match names {
        [] => return None,
        [one] => format!("{one} is typing…"),
        [one, two] => format!("{one} and {two} are typing…"),
        [one, two, _] => format!("{one}, {two} and one other are typing…"),
        [one, two, rest @ ..] => format!("{one}, {two} and {} others are typing…", rest.len()),
    };
    Some(line)
}

/// Other people's carets over the field: see the module documentation.
#[component]
fn Carets(
    model: CampaignModel,
    field: TextField,
    layer: NodeRef<leptos::html::Div>,
) -> impl IntoView {
    let text = model.text(field);
    let pieces = move || {
        text.with(|t| {
            let carets: Vec<(String, usize)> =
                t.carets().map(|(name, at)| (name.to_owned(), at)).collect();
            (!carets.is_empty()).then(|| cut_at_carets(t.text(), &carets))
        })
    };
    view! {
        <div class="carets" aria-hidden="true" node_ref=layer>
            {move || {
                pieces()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(before, caret)| {
                        view! {
                            <span class="caret-text">{before}</span>
                            {caret.map(|name| view! {
                                <span class=format!("caret {}", person_colour(&name)) data-name=name></span>
                            })}
                        }
                    })
                    .collect_view()
            }}
        </div>
    }
}

/// The people typing into `field`, each in their caret's colour.
#[component]
fn TypingNow(model: CampaignModel, field: TextField) -> impl IntoView {
    let names = move || {
        model.typing.with(|t| {
            t.keys()
                .filter(|(f, _)| *f == field)
                .map(|(_, name)| name.clone())
                .collect::<Vec<_>>()
        })
    };
    view! {
        <p class="typing-now" aria-live="off">
            {move || {
                let names = names();
                let swatches = names
                    .iter()
                    .take(2)
                    .map(|name| view! { <span class=format!("swatch {}", person_colour(name))></span> })
                    .collect_view();
                typing_line(&names).map(|line| view! { {swatches} {line} })
            }}
        </p>
    }
}

/// Keep the caret layer scrolled like the field it is drawn over.
fn follow_scroll(element: &TextElement, layer: &web_sys::HtmlElement) {
    let field = element.html();
    layer.set_scroll_top(field.scroll_top());
    layer.set_scroll_left(field.scroll_left());
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
    let layer = NodeRef::<leptos::html::Div>::new();
    let element = move || match (line.get_untracked(), area.get_untracked()) {
        (Some(e), _) => Some(TextElement::Line(e)),
        (_, Some(e)) => Some(TextElement::Area(e)),
        _ => None,
    };
    let sync_scroll = move || {
        if let (Some(element), Some(layer)) = (element(), layer.get_untracked()) {
            follow_scroll(&element, &layer);
        }
    };
    // Browser only: after the carets are drawn (the text changed), line their layer up again.
    Effect::new(move |_| {
        text.track();
        request_animation_frame(sync_scroll);
    });
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
    let on_scroll = move |_| sync_scroll();
    let editor = move || {
        let initial = initial.clone();
        match field {
            TextField::Title => view! {
                <div class="with-carets">
                    <input
                        node_ref=line
                        id="campaign-title"
                        class="title-input"
                        aria-label=label
                        value=initial
                        on:input=on_input
                        on:scroll=on_scroll
                    />
                    <Carets model field layer/>
                </div>
            }
            .erase(),
            TextField::Description => view! {
                <div class="with-carets">
                    <textarea
                        node_ref=area
                        id="campaign-description"
                        class="description-input"
                        aria-label=label
                        placeholder="Describe the campaign"
                        on:input=on_input
                        on:scroll=on_scroll
                    >
                        {initial}
                    </textarea>
                    <Carets model field layer/>
                </div>
            }
            .erase(),
        }
    };
    let reader = move || {
        let value = move || text.with(|t| t.text().to_owned());
        match field {
            TextField::Title => view! { <p class="title-text">{value}</p> }.erase(),
            TextField::Description => view! {
                <p class="description-text">
                    {move || {
                        let v = value();
                        if v.is_empty() { "No description yet.".to_owned() } else { v }
                    }}
                </p>
            }
            .erase(),
        }
    };
    view! {
        <div class=format!("shared-text {}-field", field.as_str())>
            <Show when=move || model.role.get().can_edit() fallback=reader>
                {editor.clone()}
            </Show>
            <TypingNow model field/>
            <HoldNotice model field/>
            <Notices model place=Place::Field(field.as_str().into())/>
        </div>
    }
    .erase()
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
            .erase(),
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
            .erase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_cut_where_the_carets_are() {
        let carets = |list: &[(&str, usize)]| -> Vec<(String, usize)> {
            list.iter().map(|(n, at)| (n.to_string(), *at)).collect()
        };
        let piece = |text: &str, name: Option<&str>| (text.to_owned(), name.map(str::to_owned));
        assert_eq!(cut_at_carets("héllo", &[]), [piece("héllo", None)]);
        assert_eq!(
            cut_at_carets("a\n", &carets(&[("Ada", 2)])),
            [piece("a\n", Some("Ada")), piece("\u{200B}", None)]
        );
        assert_eq!(
            cut_at_carets("héllo wörld", &carets(&[("Bob", 9), ("Ada", 2)])),
            [
                piece("hé", Some("Ada")),
                piece("llo wör", Some("Bob")),
                piece("ld", None)
            ]
        );
        assert_eq!(
            cut_at_carets("ab", &carets(&[("Ada", 1), ("Bob", 1), ("Cy", 7)])),
            [
                piece("a", Some("Ada")),
                piece("", Some("Bob")),
                piece("b", Some("Cy")),
                piece("", None)
            ]
        );
    }

    #[test]
    fn the_typing_line_names_a_few_people() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(typing_line(&[]), None);
        assert_eq!(typing_line(&names(&["Ada"])).unwrap(), "Ada is typing…");
        assert_eq!(
            typing_line(&names(&["Ada", "Bob"])).unwrap(),
            "Ada and Bob are typing…"
        );
        assert_eq!(
            typing_line(&names(&["Ada", "Bob", "Cy"])).unwrap(),
            "Ada, Bob and one other are typing…"
        );
        assert_eq!(
            typing_line(&names(&["Ada", "Bob", "Cy", "Di"])).unwrap(),
            "Ada, Bob and 2 others are typing…"
        );
        assert_eq!(person_colour("Ada"), person_colour("Ada"));
    }

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
