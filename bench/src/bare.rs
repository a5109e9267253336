//! The "bare" baseline: the least a WebSocket broadcast server on this stack can do. Every text
//! frame any client sends is forwarded, as the same bytes, to every connected client (the sender
//! included) through one tokio broadcast channel. No parsing, no state, no durability — the
//! practical ceiling Rally is measured against.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Serve until the process ends; prints `listening <addr>` once bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Utf8Bytes>(1024);
    loop {
        let (stream, _) = listener.accept().await?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // Default buffers: this is the baseline "as shipped".
            let Ok(socket) = tokio_tungstenite::accept_async_with_config(
                stream,
                Some(WebSocketConfig::default()),
            )
            .await
            else {
                return;
            };
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
