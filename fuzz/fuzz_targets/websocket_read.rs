//! Any bytes on an upgraded connection, read with the gateway's limits: reading never panics,
//! and no message over the frame limit gets through.
#![no_main]

use std::io::{Cursor, Read, Write};

use libfuzzer_sys::fuzz_target;
use rally::gateway::limits::{MAX_FRAME_BYTES, READ_BUFFER_BYTES};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};

/// The client's bytes to read; what the server writes goes nowhere.
struct Wire(Cursor<Vec<u8>>);

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|bytes: &[u8]| {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .read_buffer_size(READ_BUFFER_BYTES);
    let mut socket = WebSocket::from_raw_socket(
        Wire(Cursor::new(bytes.to_vec())),
        Role::Server,
        Some(config),
    );
    for _ in 0..1024 {
        match socket.read() {
            Ok(message) => assert!(message.len() <= MAX_FRAME_BYTES),
            Err(_) => break,
        }
    }
});
