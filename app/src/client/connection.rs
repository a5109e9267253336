//! The live connection as the pages see it: a thin shell that runs [`LiveClient`]'s outputs
//! against the browser ([`BrowserIo`]) and exposes Leptos signals.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use leptos::prelude::*;
use send_wrapper::SendWrapper;

use super::io::{BrowserIo, SocketEvents, SocketHandle};
use super::live::{ConnectionStatus, LiveClient, Output, ReplyPayload};
use crate::model::CampaignId;
use crate::protocol::{ClientRequest, ErrorBody};

type ReplyFn = Box<dyn FnOnce(Result<ReplyPayload, ErrorBody>)>;
/// Receives a subscribed campaign's outputs (subscribed, state, presence, resync, failure).
pub type CampaignListener = Rc<dyn Fn(&Output)>;

struct Inner {
    io: Rc<dyn BrowserIo>,
    client: RefCell<LiveClient>,
    socket: RefCell<Option<Rc<dyn SocketHandle>>>,
    /// Counts sockets opened, so a socket given up ([`Output::DropSocket`]) cannot report later.
    socket_number: std::cell::Cell<u64>,
    replies: RefCell<HashMap<String, ReplyFn>>,
    listeners: RefCell<HashMap<CampaignId, CampaignListener>>,
    ops_listener: RefCell<Option<CampaignListener>>,
    media_listener: RefCell<Option<CampaignListener>>,
    status: RwSignal<ConnectionStatus>,
    queued: RwSignal<usize>,
}

/// The page's one WebSocket connection. Cheap to clone; provided as context in the browser.
#[derive(Clone)]
pub struct Connection {
    inner: SendWrapper<Rc<Inner>>,
    /// What the connection indicator shows.
    pub status: RwSignal<ConnectionStatus>,
    /// Requests waiting for the connection to come back.
    pub queued: RwSignal<usize>,
}

/// The connection, in the browser; `None` while rendering on the server.
pub fn use_connection() -> Option<Connection> {
    use_context::<Connection>()
}

struct Events {
    inner: Weak<Inner>,
    socket_number: u64,
}

impl Events {
    /// The connection, if this is still its current socket.
    fn current(&self) -> Option<Rc<Inner>> {
        self.inner
            .upgrade()
            .filter(|inner| inner.socket_number.get() == self.socket_number)
    }
}

impl SocketEvents for Events {
    fn opened(&self) {
        if let Some(inner) = self.current() {
            let out = inner.client.borrow_mut().opened();
            run(&inner, out);
        }
    }

    fn message(&self, text: String) {
        if let Some(inner) = self.current() {
            let out = inner.client.borrow_mut().received(&text);
            run(&inner, out);
        }
    }

    fn closed(&self, code: u16, _reason: String) {
        if let Some(inner) = self.current() {
            inner.socket.borrow_mut().take();
            let random = inner.io.random();
            let out = inner.client.borrow_mut().closed(code, random);
            run(&inner, out);
        }
    }
}

fn campaign_of(output: &Output) -> Option<CampaignId> {
    match output {
        Output::Subscribed(reply) => Some(reply.campaign_id.clone()),
        Output::State(event) => Some(event.campaign_id.clone()),
        Output::Presence(presence) => Some(presence.presence.campaign_id.clone()),
        Output::Resync(resync) => Some(resync.campaign_id.clone()),
        Output::SubscribeFailed { campaign_id, .. } => Some(campaign_id.clone()),
        Output::Writable(writable) => Some(writable.campaign_id.clone()),
        Output::Overruled(overruled) => Some(overruled.campaign_id.clone()),
        _ => None,
    }
}

/// Carry out what the state machine asked for. Never holds a borrow of the client while calling
/// out, so callbacks may call back in.
fn run(inner: &Rc<Inner>, outputs: Vec<Output>) {
    for output in outputs {
        match output {
            Output::Send(text) => {
                let socket = inner.socket.borrow().clone();
                if let Some(socket) = socket {
                    socket.send(&text);
                }
            }
            Output::OpenSocket => {
                let socket_number = inner.socket_number.get() + 1;
                inner.socket_number.set(socket_number);
                let events: Rc<dyn SocketEvents> = Rc::new(Events {
                    inner: Rc::downgrade(inner),
                    socket_number,
                });
                match inner.io.open_socket("/ws", events) {
                    Ok(socket) => *inner.socket.borrow_mut() = Some(socket),
                    Err(_) => {
                        let random = inner.io.random();
                        let out = inner.client.borrow_mut().closed(1006, random);
                        run(inner, out);
                    }
                }
            }
            Output::RetryIn(ms) => {
                let weak = Rc::downgrade(inner);
                inner.io.set_timeout(
                    ms,
                    Box::new(move || {
                        if let Some(inner) = weak.upgrade() {
                            let out = inner.client.borrow_mut().retry();
                            run(&inner, out);
                        }
                    }),
                );
            }
            Output::DropSocket => {
                inner.socket_number.set(inner.socket_number.get() + 1);
                if let Some(socket) = inner.socket.borrow_mut().take() {
                    socket.close();
                }
            }
            Output::ProbeDeadline { request_id, ms } => {
                let weak = Rc::downgrade(inner);
                inner.io.set_timeout(
                    ms,
                    Box::new(move || {
                        if let Some(inner) = weak.upgrade() {
                            let random = inner.io.random();
                            let out = inner.client.borrow_mut().probe_expired(&request_id, random);
                            run(&inner, out);
                        }
                    }),
                );
            }
            Output::Status(status) => inner.status.set(status),
            Output::Reply { request_id, result } => {
                let callback = inner.replies.borrow_mut().remove(&request_id);
                if let Some(callback) = callback {
                    callback(result);
                }
            }
            Output::Media(_) => {
                let listener = inner.media_listener.borrow().clone();
                if let Some(listener) = listener {
                    listener(&output);
                }
            }
            Output::OpsHistory(_) | Output::OpsSample(_) => {
                let listener = inner.ops_listener.borrow().clone();
                if let Some(listener) = listener {
                    listener(&output);
                }
            }
            other => {
                let Some(campaign) = campaign_of(&other) else {
                    continue;
                };
                let listener = inner.listeners.borrow().get(&campaign).cloned();
                if let Some(listener) = listener {
                    listener(&other);
                }
            }
        }
    }
    let queued = inner.client.borrow().queued();
    if inner.queued.get_untracked() != queued {
        inner.queued.set(queued);
    }
}

impl Connection {
    /// Create and start connecting.
    pub fn start(io: Rc<dyn BrowserIo>) -> Self {
        let status = RwSignal::new(ConnectionStatus::Connecting);
        let queued = RwSignal::new(0);
        let inner = Rc::new(Inner {
            io: io.clone(),
            client: RefCell::new(LiveClient::default()),
            socket: RefCell::new(None),
            socket_number: std::cell::Cell::new(0),
            replies: RefCell::new(HashMap::new()),
            listeners: RefCell::new(HashMap::new()),
            ops_listener: RefCell::new(None),
            media_listener: RefCell::new(None),
            status,
            queued,
        });
        let weak = Rc::downgrade(&inner);
        io.on_network_change(Rc::new(move |offline| {
            if let Some(inner) = weak.upgrade() {
                let out = inner.client.borrow_mut().set_offline(offline);
                run(&inner, out);
            }
        }));
        let out = inner.client.borrow_mut().start();
        run(&inner, out);
        Connection {
            inner: SendWrapper::new(inner),
            status,
            queued,
        }
    }

    /// Send a request (queued while disconnected); `on_reply` gets its answer.
    pub fn request(
        &self,
        request: ClientRequest,
        on_reply: impl FnOnce(Result<ReplyPayload, ErrorBody>) + 'static,
    ) -> String {
        let inner: &Rc<Inner> = &self.inner;
        let (id, out) = inner.client.borrow_mut().request(request);
        inner
            .replies
            .borrow_mut()
            .insert(id.clone(), Box::new(on_reply));
        run(inner, out);
        // A reply that does not come may mean a socket that died quietly.
        let weak = Rc::downgrade(inner);
        let watched = id.clone();
        inner.io.set_timeout(
            super::live::REPLY_PATIENCE_MS,
            Box::new(move || {
                if let Some(inner) = weak.upgrade() {
                    let out = inner.client.borrow_mut().overdue(&watched);
                    run(&inner, out);
                }
            }),
        );
        id
    }

    /// Follow a campaign; `listener` receives its outputs until [`Connection::unsubscribe`].
    pub fn subscribe(
        &self,
        campaign: CampaignId,
        since_version: Option<u64>,
        listener: CampaignListener,
    ) {
        let inner: &Rc<Inner> = &self.inner;
        inner
            .listeners
            .borrow_mut()
            .insert(campaign.clone(), listener);
        let out = inner.client.borrow_mut().subscribe(campaign, since_version);
        run(inner, out);
    }

    pub fn unsubscribe(&self, campaign: &CampaignId) {
        let inner: &Rc<Inner> = &self.inner;
        inner.listeners.borrow_mut().remove(campaign);
        let out = inner.client.borrow_mut().unsubscribe(campaign);
        run(inner, out);
    }

    /// Follow the ops view; `listener` gets [`Output::OpsHistory`] then [`Output::OpsSample`]s.
    pub fn subscribe_ops(&self, listener: CampaignListener) {
        let inner: &Rc<Inner> = &self.inner;
        *inner.ops_listener.borrow_mut() = Some(listener);
        let out = inner.client.borrow_mut().subscribe_ops();
        run(inner, out);
    }

    pub fn unsubscribe_ops(&self) {
        let inner: &Rc<Inner> = &self.inner;
        inner.ops_listener.borrow_mut().take();
        inner.client.borrow_mut().unsubscribe_ops();
    }

    /// Receive the media relay's pushes ([`Output::Media`]); `None` stops.
    pub fn set_media_listener(&self, listener: Option<CampaignListener>) {
        *self.inner.media_listener.borrow_mut() = listener;
    }

    pub fn io(&self) -> Rc<dyn BrowserIo> {
        self.inner.io.clone()
    }
}
