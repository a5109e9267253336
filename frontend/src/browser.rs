//! [`BrowserIo`] on web-sys: the browser's WebSocket, fetch, timers and network events, for the
//! app's live connection and page data.

use std::rc::Rc;

use rally_app::client::io::{CopyFuture, HttpFuture};
use rally_app::client::{BrowserIo, SocketEvents, SocketHandle};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, MessageEvent, RequestCredentials, RequestInit, Response, WebSocket};

pub struct WebBrowser;

fn window() -> web_sys::Window {
    web_sys::window().expect("running in a browser window")
}

fn js_error(value: JsValue) -> String {
    value
        .as_string()
        .or_else(|| {
            js_sys::JSON::stringify(&value)
                .ok()
                .and_then(|s| s.as_string())
        })
        .unwrap_or_else(|| "unknown JavaScript error".into())
}

/// A WebSocket plus the closures it calls, which must live as long as it does.
struct WebSocketHandle {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl SocketHandle for WebSocketHandle {
    fn send(&self, text: &str) -> bool {
        self.socket.ready_state() == WebSocket::OPEN && self.socket.send_with_str(text).is_ok()
    }

    fn close(&self) {
        let _ = self.socket.close();
    }
}

impl Drop for WebSocketHandle {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        let _ = self.socket.close();
    }
}

impl BrowserIo for WebBrowser {
    fn http(&self, method: &'static str, path: &str, json_body: Option<String>) -> HttpFuture {
        let init = RequestInit::new();
        init.set_method(method);
        init.set_credentials(RequestCredentials::SameOrigin);
        if let Some(body) = &json_body {
            init.set_body(&JsValue::from_str(body));
        }
        let request = web_sys::Request::new_with_str_and_init(path, &init);
        Box::pin(async move {
            let request = request.map_err(js_error)?;
            if json_body.is_some() {
                request
                    .headers()
                    .set("content-type", "application/json")
                    .map_err(js_error)?;
            }
            let response =
                wasm_bindgen_futures::JsFuture::from(window().fetch_with_request(&request))
                    .await
                    .map_err(js_error)?;
            let response: Response = response.dyn_into().map_err(js_error)?;
            let text = wasm_bindgen_futures::JsFuture::from(response.text().map_err(js_error)?)
                .await
                .map_err(js_error)?;
            Ok((response.status(), text.as_string().unwrap_or_default()))
        })
    }

    fn open_socket(
        &self,
        path: &str,
        events: Rc<dyn SocketEvents>,
    ) -> Result<Rc<dyn SocketHandle>, String> {
        let location = window().location();
        let scheme = if location.protocol().map_err(js_error)? == "https:" {
            "wss"
        } else {
            "ws"
        };
        let url = format!("{scheme}://{}{path}", location.host().map_err(js_error)?);
        let socket = WebSocket::new(&url).map_err(js_error)?;
        let on_open = {
            let events = events.clone();
            Closure::<dyn FnMut()>::new(move || events.opened())
        };
        let on_message = {
            let events = events.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                if let Some(text) = event.data().as_string() {
                    events.message(text);
                }
            })
        };
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            events.closed(event.code(), event.reason())
        });
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // A failed connection fires `error` then `close`; `close` alone is enough to retry.
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Rc::new(WebSocketHandle {
            socket,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        }))
    }

    fn set_timeout(&self, ms: u64, f: Box<dyn FnOnce()>) {
        let callback = Closure::once_into_js(f);
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(
            callback.unchecked_ref(),
            ms.min(i32::MAX as u64) as i32,
        );
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    fn on_network_change(&self, f: Rc<dyn Fn(bool)>) {
        for (name, offline) in [("offline", true), ("online", false)] {
            let f = f.clone();
            let listener = Closure::<dyn FnMut()>::new(move || f(offline));
            let _ =
                window().add_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
            // The page lives as long as the listener: hand its memory to JavaScript.
            listener.forget();
        }
    }

    fn reload(&self) {
        let _ = window().location().reload();
    }

    fn origin(&self) -> String {
        window().location().origin().unwrap_or_default()
    }

    fn copy_text(&self, text: &str) -> CopyFuture {
        let written = window().navigator().clipboard().write_text(text);
        Box::pin(async move { wasm_bindgen_futures::JsFuture::from(written).await.is_ok() })
    }
}
