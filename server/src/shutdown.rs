//! Coordinated shutdown.
//!
//! One [`Shutdown`] is created per server. Long-lived tasks (WebSocket connections, background
//! workers) hold a [`ShutdownSignal`] and select on [`ShutdownSignal::recv`] beside their work, so
//! when the process is asked to stop every connection can say goodbye (a WebSocket close with code
//! 1001, going away) instead of being cut.

use tokio::sync::watch;

/// The trigger side, owned by the server's run loop.
#[derive(Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

/// The listening side; cheap to clone, one per task.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Shutdown { sender }
    }

    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            receiver: self.sender.subscribe(),
        }
    }

    /// Tell every holder of a signal to stop. Idempotent.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// True once shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves when shutdown begins (immediately if it already has).
    pub async fn recv(&mut self) {
        // An error means the Shutdown was dropped, which only happens when the server is gone.
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
