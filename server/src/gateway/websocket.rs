//! The WebSocket upgrade and Rally's outgoing text frames.
//!
//! Reading (masked client frames, pings, close) is tungstenite's job. Writing text is Rally's:
//! a server's frames are unmasked, so a broadcast event's bytes are the same for every
//! subscriber, and a batch of them can go to the kernel in one vectored `write` straight from
//! the shared, serialized-once buffers — a 2–10 byte header per frame and no copy in user space.
//! (Through tungstenite, every subscriber's copy of every event was formatted and copied into
//! its write buffer first: a sixth of the server's CPU in the 1 × 1,000 benchmark.)
//!
//! Doing the upgrade here instead of through axum's `WebSocketUpgrade` is what makes the raw
//! stream reachable; the handshake checks are the same (RFC 6455 §4.2.1, HTTP/1.1 only).

use std::future::Future;
use std::io::IoSlice;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// An upgraded connection: tungstenite reads; [`send_texts`] sends text.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A valid WebSocket upgrade request, ready to be accepted.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade (answered `400`, `426` for a wrong version).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeRejection {
    #[error("WebSocket upgrades use GET")]
    NotGet,
    #[error("not a WebSocket upgrade request (Connection: upgrade, Upgrade: websocket)")]
    NotUpgrade,
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    #[error("Sec-WebSocket-Key is missing")]
    NoKey,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for UpgradeRejection {
    fn into_response(self) -> Response {
        let status = match self {
            UpgradeRejection::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut response = (status, self.to_string()).into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = UpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(UpgradeRejection::NotGet);
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(UpgradeRejection::NotUpgrade);
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(UpgradeRejection::Version);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeRejection::NoKey)?
            .clone();
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(UpgradeRejection::NotUpgradable)?;
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answer `101 Switching Protocols` and run `serve` on the socket once the client has it.
    pub fn accept<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { key, on_upgrade } = self;
        tokio::spawn(async move {
            // The client went away before the switch: nothing to serve.
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            serve(socket).await;
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a valid 101 response")
    }
}

/// The header of an unmasked, final text frame of `len` bytes, into `out`.
fn text_header(len: usize, out: &mut Vec<u8>) {
    const FIN_TEXT: u8 = 0x81;
    match len {
        0..=125 => out.extend_from_slice(&[FIN_TEXT, len as u8]),
        126..=0xFFFF => {
            out.extend_from_slice(&[FIN_TEXT, 126]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.extend_from_slice(&[FIN_TEXT, 127]);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Header length for a payload of `len` bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Write `texts` (valid UTF-8, as every frame Rally makes) as text frames, in order, with as
/// few `write` calls as the kernel allows. First flushes whatever tungstenite queued (a pong,
/// say), so frames never interleave. `sent` counts the batch's bytes the kernel has taken, also
/// when the future is dropped half-way (a slow consumer's write timed out): see
/// [`rest_of_frame`].
pub async fn send_texts<S>(
    socket: &mut WebSocketStream<S>,
    texts: &[&[u8]],
    sent: &mut usize,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    socket.flush().await.map_err(std::io::Error::other)?;
    let mut headers = Vec::with_capacity(texts.len() * 4);
    for text in texts {
        text_header(text.len(), &mut headers);
    }
    let mut slices = Vec::with_capacity(texts.len() * 2);
    let mut at = 0;
    for text in texts {
        let end = at + header_len(text.len());
        slices.push(IoSlice::new(&headers[at..end]));
        slices.push(IoSlice::new(text));
        at = end;
    }
    let io = socket.get_mut();
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let written = io.write_vectored(remaining).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *sent += written;
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

/// The bytes that complete the frame a batch write stopped in, after `sent` of its bytes went
/// out (empty when it stopped between frames). Sending them first keeps the stream valid, so a
/// close frame can follow.
pub fn rest_of_frame(texts: &[&[u8]], sent: usize) -> Vec<u8> {
    let mut start = 0;
    for text in texts {
        let mut frame = Vec::with_capacity(header_len(text.len()) + text.len());
        text_header(text.len(), &mut frame);
        let end = start + frame.len() + text.len();
        if sent < end {
            if sent <= start {
                return Vec::new();
            }
            frame.extend_from_slice(text);
            return frame[sent - start..].to_vec();
        }
        start = end;
    }
    Vec::new()
}

/// Send `rest` (see [`rest_of_frame`]), then a close frame with `code` and `reason` (at most
/// 123 bytes), written directly: this also works after tungstenite gave up on the stream.
pub async fn send_close<S>(
    socket: &mut WebSocketStream<S>,
    rest: &[u8],
    code: u16,
    reason: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const FIN_CLOSE: u8 = 0x88;
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(rest.len() + 4 + reason.len());
    frame.extend_from_slice(rest);
    frame.extend_from_slice(&[FIN_CLOSE, 2 + reason.len() as u8]);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    let io = socket.get_mut();
    io.write_all(&frame).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    /// What Rally writes, a real tungstenite client reads back intact: every length encoding,
    /// in one batch, after a pong tungstenite queued itself.
    #[tokio::test]
    async fn a_client_reads_every_frame_of_a_batch() {
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let texts: Vec<Utf8Bytes> = [0usize, 1, 125, 126, 4_000, 65_535, 65_536, 200_000]
            .iter()
            .map(|&n| "é".repeat(n / 2).into())
            .collect();
        let writer = tokio::spawn(async move {
            let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
            let mut sent = 0;
            send_texts(&mut server, &bytes, &mut sent).await.unwrap();
            (server, texts)
        });
        let mut got = Vec::new();
        while got.len() < 8 {
            match client.next().await.unwrap().unwrap() {
                Message::Text(text) => got.push(text),
                other => panic!("unexpected {other:?}"),
            }
        }
        let (_, texts) = writer.await.unwrap();
        assert_eq!(got, texts);
    }

    /// A write cut off in the middle of a frame (the reader stalled) is completed before the
    /// close frame, so a reader that comes back sees whole frames, then the close and its code.
    #[tokio::test]
    async fn a_close_after_a_stalled_write_arrives_intact() {
        let (server_io, client_io) = tokio::io::duplex(1_000);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let texts: Vec<String> = (0..4).map(|i| format!("{i}").repeat(700)).collect();
        let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        let mut sent = 0;
        let stalled = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            send_texts(&mut server, &bytes, &mut sent),
        )
        .await;
        assert!(stalled.is_err(), "nobody reads: the write stalls");
        assert!(
            sent > 0 && sent < 4 * 704,
            "it stopped inside the batch: {sent}"
        );
        let rest = rest_of_frame(&bytes, sent);
        assert!(!rest.is_empty(), "inside a frame");
        let closing =
            tokio::spawn(
                async move { send_close(&mut server, &rest, 4008, "slow_consumer").await },
            );
        let mut frames = Vec::new();
        loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) => frames.push(text.len()),
                Some(Ok(Message::Close(Some(close)))) => {
                    assert_eq!(u16::from(close.code), 4008);
                    assert_eq!(close.reason.as_str(), "slow_consumer");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            !frames.is_empty() && frames.iter().all(|n| *n == 700),
            "{frames:?}"
        );
        closing.await.unwrap().unwrap();
    }

    #[test]
    fn the_rest_of_a_frame_starts_where_the_write_stopped() {
        let texts: [&[u8]; 2] = [b"abc", b"defg"];
        // Frames: [81 03 a b c] [81 04 d e f g]
        assert_eq!(rest_of_frame(&texts, 0), b"");
        assert_eq!(rest_of_frame(&texts, 3), b"bc");
        assert_eq!(rest_of_frame(&texts, 5), b"", "between frames");
        assert_eq!(rest_of_frame(&texts, 6), [0x04, b'd', b'e', b'f', b'g']);
        assert_eq!(rest_of_frame(&texts, 11), b"", "all sent");
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        for (len, expected) in [
            (0usize, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xFF, 0xFF]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let mut out = Vec::new();
            text_header(len, &mut out);
            assert_eq!(out, expected, "length {len}");
            assert_eq!(header_len(len), expected.len());
        }
    }
}
