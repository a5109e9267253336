//! A config section as a form: one labelled control per setting, nested objects as groups.
//!
//! The form edits the same draft as the JSON editor (the section's JSON text), so switching
//! between them loses nothing. Its layout ([`rows`]) depends only on the draft's shape — which
//! settings exist and their kinds — so typing a value re-renders no control and never moves the
//! caret (a control is made once per setting, and a text's control stays one kind however long
//! it grows). Lists and empty values are shown, not edited: "Edit as JSON" edits them.

use crate::pages::erase::Erase;
use leptos::prelude::*;
use serde_json::{Map, Number, Value};

/// What control a setting gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Switch,
    /// An object: its settings follow, one level deeper.
    Group,
    /// A list or `null`: shown as JSON.
    Other,
}

/// One line of the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub path: Vec<String>,
    pub kind: Kind,
}

impl Row {
    fn key(&self) -> String {
        self.path.join("\u{1f}")
    }

    pub fn label(&self) -> String {
        self.path.last().cloned().unwrap_or_default()
    }

    pub fn depth(&self) -> usize {
        self.path.len().saturating_sub(1)
    }
}

fn kind(value: &Value) -> Kind {
    match value {
        Value::String(_) => Kind::Text,
        Value::Number(_) => Kind::Number,
        Value::Bool(_) => Kind::Switch,
        Value::Object(_) => Kind::Group,
        Value::Array(_) | Value::Null => Kind::Other,
    }
}

/// The form's lines for `section`, depth first, in key order.
pub fn rows(section: &Map<String, Value>) -> Vec<Row> {
    fn walk(map: &Map<String, Value>, prefix: &[String], out: &mut Vec<Row>) {
        for (key, value) in map {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            out.push(Row {
                path: path.clone(),
                kind: kind(value),
            });
            if let Value::Object(inner) = value {
                walk(inner, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(section, &[], &mut out);
    out
}

pub fn value_at<'a>(section: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(section.get(first)?, |value, key| value.get(key))
}

/// `section` with the setting at `path` set to `value` (its parents must exist).
pub fn with_value(
    mut section: Map<String, Value>,
    path: &[String],
    value: Value,
) -> Map<String, Value> {
    let Some((last, parents)) = path.split_last() else {
        return section;
    };
    let mut map = &mut section;
    for key in parents {
        match map.get_mut(key) {
            Some(Value::Object(inner)) => map = inner,
            _ => return section,
        }
    }
    map.insert(last.clone(), value);
    section
}

/// The section the draft text holds, if it is a JSON object.
pub fn parse(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

pub fn pretty(section: &Map<String, Value>) -> String {
    serde_json::to_string_pretty(section).unwrap_or_default()
}

/// The form. `text` is the draft (JSON); `edited` is called before each change (to start
/// editing); `editable` is false for viewers.
#[component]
pub fn ConfigForm(
    text: RwSignal<String>,
    edited: Callback<()>,
    editable: Signal<bool>,
) -> impl IntoView {
    let shape = Memo::new(move |_| text.with(|t| parse(t).map(|s| rows(&s))));
    let read =
        move |path: &[String]| text.with(|t| parse(t).and_then(|s| value_at(&s, path).cloned()));
    let write = move |path: Vec<String>, value: Value| {
        edited.run(());
        if let Some(section) = parse(&text.get_untracked()) {
            text.set(pretty(&with_value(section, &path, value)));
        }
    };
    let control = move |row: Row| {
        let id = format!("setting-{}", row.path.join("-"));
        let path = row.path.clone();
        let label = row.label();
        let shown = {
            let path = path.clone();
            move || match read(&path) {
                Some(Value::String(s)) => s,
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => other.to_string(),
                None => String::new(),
            }
        };
        match row.kind {
            Kind::Group => view! { <p class="setting-group">{label}</p> }.erase(),
            Kind::Text => {
                // Sized once, when the control is made: a text that grows keeps its control.
                let long = matches!(read(&path), Some(Value::String(s)) if s.contains('\n') || s.chars().count() > 60);
                let on_input =
                    move |ev| write(path.clone(), Value::String(event_target_value(&ev)));
                view! {
                    <label class="setting-label" for=id.clone()>{label}</label>
                    <textarea
                        id=id
                        class="setting-input"
                        rows=if long { 3 } else { 1 }
                        prop:value=shown
                        readonly=move || !editable.get()
                        on:input=on_input
                    ></textarea>
                }
                .erase()
            }
            Kind::Number => {
                let on_input = move |ev| {
                    let typed = event_target_value(&ev);
                    let number = typed
                        .parse::<i64>()
                        .map(Number::from)
                        .ok()
                        .or_else(|| typed.parse::<f64>().ok().and_then(Number::from_f64));
                    if let Some(number) = number {
                        write(path.clone(), Value::Number(number));
                    }
                };
                view! {
                    <label class="setting-label" for=id.clone()>{label}</label>
                    <input id=id type="number" step="any" class="setting-input" prop:value=shown readonly=move || !editable.get() on:input=on_input/>
                }
                .erase()
            }
            Kind::Switch => {
                let checked = {
                    let path = path.clone();
                    move || matches!(read(&path), Some(Value::Bool(true)))
                };
                let on_change =
                    move |ev| write(path.clone(), Value::Bool(event_target_checked(&ev)));
                view! {
                    <label class="setting-label setting-switch">
                        <input id=id type="checkbox" prop:checked=checked disabled=move || !editable.get() on:change=on_change/>
                        " " {label}
                    </label>
                }
                .erase()
            }
            Kind::Other => view! {
                <span class="setting-label">{label}</span>
                <code class="setting-other">{shown}</code>
            }
            .erase(),
        }
    };
    view! {
        {move || match shape.get() {
            None => view! {
                <p class="notice hold">"These settings are not valid JSON right now; fix them with “Edit as JSON”."</p>
            }
            .erase(),
            Some(rows) if rows.is_empty() => view! { <p class="empty">"No settings in this section yet."</p> }.erase(),
            Some(rows) => view! {
                <div class="config-form">
                    <For each=move || rows.clone() key=Row::key let:row>
                        <div class="setting" style=format!("--depth:{}", row.depth())>{control(row.clone())}</div>
                    </For>
                </div>
            }
            .erase(),
        }}
        <Show when=move || editable.get()>
            <NewSetting text edited/>
        </Show>
    }
}

/// Add a top-level text setting by name.
#[component]
fn NewSetting(text: RwSignal<String>, edited: Callback<()>) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let problem = RwSignal::new(None::<String>);
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let key = name.get_untracked().trim().to_owned();
        if key.is_empty() {
            return problem.set(Some("Give the new setting a name.".into()));
        }
        let Some(section) = parse(&text.get_untracked()) else {
            return problem.set(Some("Fix the settings’ JSON first.".into()));
        };
        if section.contains_key(&key) {
            return problem.set(Some(format!("“{key}” is already a setting here.")));
        }
        edited.run(());
        text.set(pretty(&with_value(
            section,
            &[key],
            Value::String(String::new()),
        )));
        name.set(String::new());
        problem.set(None);
    };
    view! {
        <form class="new-setting" on:submit=add>
            <label class="visually-hidden" for="new-setting">"New setting"</label>
            <input
                id="new-setting"
                class="section-input"
                placeholder="new setting"
                prop:value=move || name.get()
                on:input=move |ev| name.set(event_target_value(&ev))
            />
            <button class="button small secondary" type="submit">"Add setting"</button>
        </form>
        {move || problem.get().map(|p| view! { <p class="notice hold">{p}</p> })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn section(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn rows_follow_the_shape_depth_first() {
        let s = section(
            json!({"hero": {"headline": "Hi", "show": true}, "limit": 3, "tags": ["a"], "body": "x\ny"}),
        );
        let got: Vec<(String, Kind)> = rows(&s)
            .into_iter()
            .map(|r| (r.path.join("."), r.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("body".to_owned(), Kind::Text),
                ("hero".to_owned(), Kind::Group),
                ("hero.headline".to_owned(), Kind::Text),
                ("hero.show".to_owned(), Kind::Switch),
                ("limit".to_owned(), Kind::Number),
                ("tags".to_owned(), Kind::Other),
            ]
        );
    }

    #[test]
    fn typing_a_value_keeps_the_shape() {
        let s = section(json!({"hero": {"headline": "Hi"}}));
        let path = ["hero".to_owned(), "headline".to_owned()];
        let edited = with_value(s.clone(), &path, json!("Hello"));
        assert_eq!(edited, section(json!({"hero": {"headline": "Hello"}})));
        assert_eq!(rows(&edited), rows(&s), "no control is rebuilt");
        // A path through a non-object changes nothing.
        let bad = ["hero".to_owned(), "headline".to_owned(), "x".to_owned()];
        assert_eq!(with_value(edited.clone(), &bad, json!(1)), edited);
    }
}
