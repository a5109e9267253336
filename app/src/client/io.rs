//! What the browser must provide: HTTP, a WebSocket, timers, randomness and the clipboard. The `frontend` crate
//! implements this with web-sys; keeping it a trait keeps `app` free of browser bindings.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Callbacks a socket reports to.
pub trait SocketEvents {
    fn opened(&self);
    fn message(&self, text: String);
    /// Closed or failed; `code` is the WebSocket close code (1006 when the connection just broke).
    fn closed(&self, code: u16, reason: String);
}

/// An open (or opening) socket.
pub trait SocketHandle {
    /// False if the socket is not open.
    fn send(&self, text: &str) -> bool;
    fn close(&self);
}

pub type HttpFuture = Pin<Box<dyn Future<Output = Result<(u16, String), String>>>>;
/// Resolves to whether the text reached the clipboard.
pub type CopyFuture = Pin<Box<dyn Future<Output = bool>>>;

pub trait BrowserIo {
    /// An HTTP request to this site with an optional JSON body: (status, body text).
    fn http(&self, method: &'static str, path: &str, json_body: Option<String>) -> HttpFuture;
    /// Open a WebSocket to this site's `path`.
    fn open_socket(
        &self,
        path: &str,
        events: Rc<dyn SocketEvents>,
    ) -> Result<Rc<dyn SocketHandle>, String>;
    /// Run `f` once after `ms` milliseconds.
    fn set_timeout(&self, ms: u64, f: Box<dyn FnOnce()>);
    /// A random number in [0, 1).
    fn random(&self) -> f64;
    /// Milliseconds since the epoch.
    fn now_ms(&self) -> f64;
    /// Call `f(true)` when the browser goes offline and `f(false)` when it comes back.
    fn on_network_change(&self, f: Rc<dyn Fn(bool)>);
    /// Reload the page (after signing in, so the socket carries the new session).
    fn reload(&self);
    /// This site's origin as the browser sees it (`https://rally.example`), for links people share.
    fn origin(&self) -> String;
    /// Put `text` on the clipboard.
    fn copy_text(&self, text: &str) -> CopyFuture;
}

/// How pages find the browser's I/O. Leptos contexts must be `Send + Sync`; the browser is single
/// threaded, so the wrapper only asserts what is already true there.
pub type SharedIo = send_wrapper::SendWrapper<Rc<dyn BrowserIo>>;
