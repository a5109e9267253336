//! `GET /api/docs`: the OpenAPI document as a page people read — every operation with its
//! parameters, body and answers, then every type — rendered from the document itself, so the
//! page and the JSON never disagree. Plain HTML with the site's stylesheet: no script, no CDN.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::State;
use axum::response::Html;
use serde_json::{Map, Value};

use super::openapi::document;
use super::ApiState;

/// `GET /api/docs`: the document as a page, built from it once; the head links the site's
/// stylesheet by its current (fingerprinted) name.
pub(super) async fn docs_page(State(state): State<ApiState>) -> Html<String> {
    static BODY: OnceLock<String> = OnceLock::new();
    let body = BODY.get_or_init(|| page(document()));
    Html(format!(
        concat!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<title>HTTP API — Rally</title><link rel=\"stylesheet\" href=\"{}\"></head>{}"
        ),
        state.site.stylesheet_href(),
        body
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page after its head: every operation, then every type.
fn page(document: &Value) -> String {
    let mut html = String::from(concat!(
        "<body><header class=\"topbar\"><a class=\"brand\" href=\"/\">Rally</a></header>",
        "<main class=\"api-docs\"><h1>Rally HTTP API</h1>",
        "<p>Every operation the server answers, generated from the types it reads and writes. ",
        "The same document as JSON: <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>",
    ));
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("a path item") {
            let _ = write!(
                html,
                "<section class=\"api-operation\"><h2><span class=\"api-method\">{}</span> <code>{}</code></h2><p>{}</p>",
                method.to_uppercase(),
                escape(path),
                escape(operation["summary"].as_str().unwrap_or_default())
            );
            if let Some(params) = operation["parameters"].as_array() {
                html.push_str("<ul class=\"api-params\">");
                for param in params {
                    let _ = write!(
                        html,
                        "<li><code>{}</code> ({}): {}</li>",
                        escape(param["name"].as_str().unwrap_or_default()),
                        escape(param["in"].as_str().unwrap_or_default()),
                        escape(param["description"].as_str().unwrap_or_default())
                    );
                }
                html.push_str("</ul>");
            }
            if let Some(schema) =
                operation["requestBody"]["content"]["application/json"]["schema"].as_object()
            {
                let _ = write!(html, "<p>Body: {}</p>", schema_link(schema));
            }
            html.push_str("<ul class=\"api-answers\">");
            for (status, answer) in operation["responses"].as_object().expect("responses") {
                let body = answer["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|schema| format!(" — {}", schema_link(schema)))
                    .unwrap_or_default();
                let _ = write!(
                    html,
                    "<li><strong>{}</strong> {}{body}</li>",
                    escape(status),
                    escape(answer["description"].as_str().unwrap_or_default())
                );
            }
            html.push_str("</ul></section>");
        }
    }
    html.push_str("<h2>Types</h2>");
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    for (name, schema) in schemas {
        let _ = write!(
            html,
            "<section class=\"api-type\" id=\"type-{0}\"><h3>{0}</h3><pre tabindex=\"0\" aria-label=\"{0} as JSON Schema\">{1}</pre></section>",
            escape(name),
            escape(&serde_json::to_string_pretty(schema).expect("JSON"))
        );
    }
    html.push_str("</main></body></html>");
    html
}

/// A link to the type a schema names (or the schema itself, inline).
fn schema_link(schema: &Map<String, Value>) -> String {
    let reference = schema
        .get("$ref")
        .or_else(|| schema.get("items").and_then(|items| items.get("$ref")))
        .and_then(Value::as_str)
        .and_then(|reference| reference.rsplit('/').next());
    match reference {
        Some(name) if schema.contains_key("items") => {
            format!("a list of <a href=\"#type-{0}\">{0}</a>", escape(name))
        }
        Some(name) => format!("<a href=\"#type-{0}\">{0}</a>", escape(name)),
        None => format!(
            "<code>{}</code>",
            escape(&Value::Object(schema.clone()).to_string())
        ),
    }
}
