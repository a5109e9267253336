//! The "bare" baseline: the least a WebSocket broadcast server on this stack can do. A client
//! joins the room named by its URL path (`ws://host/<room>`); every text frame it sends is
//! forwarded, as the same bytes, to every client of that room (the sender included) through one
//! tokio broadcast channel per room. No parsing, no state, no durability — the practical ceiling
//! Rally is measured against.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Serve until the process ends; prints `listening <addr>` once bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let rooms: Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>> = Default::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut path = String::new();
            let record_path = |request: &Request, response: Response| {
                path = request.uri().path().to_owned();
                Ok(response)
            };
            // Default buffers: this is the baseline "as shipped".
            let Ok(socket) = tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                record_path,
                Some(WebSocketConfig::default()),
            )
            .await
            else {
                return;
            };
            let tx = rooms
                .lock()
                .expect("rooms lock")
                .entry(path)
                .or_insert_with(|| broadcast::channel::<Utf8Bytes>(1024).0)
                .clone();
            let (mut sink, mut stream) = socket.split();
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    message = stream.next() => match message {
                        Some(Ok(Message::Text(text))) => { let _ = tx.send(text); }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                    event = rx.recv() => match event {
                        Ok(text) => {
                            if sink.feed(Message::Text(text)).await.is_err() { return; }
                            // Drain what else is ready, then one flush.
                            while let Ok(text) = rx.try_recv() {
                                if sink.feed(Message::Text(text)).await.is_err() { return; }
                            }
                            if sink.flush().await.is_err() { return; }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
    }
}
