//! Building the relay's peer connections: codecs, interceptors, addresses, ports, and the event
//! handler that turns WebRTC callbacks into session events.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rally_app::protocol::media::Transport;
use tokio::sync::watch;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionIceErrorEvent, RTCPeerConnectionState, Registry, SettingEngineBuilder,
};

use super::call::ParticipantId;
use super::call::{MediaConfig, MediaError};
use super::feedback::{FeedbackInterceptor, SLOT};

/// How long to wait for the relay's own ICE candidates (host candidates: milliseconds; the
/// bound only matters when something is wrong with the interfaces).
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts at binding a port from the configured range before giving up.
const BIND_ATTEMPTS: usize = 8;

/// What a peer connection tells its session.
pub enum PeerEvent {
    State {
        participant: ParticipantId,
        transport: Transport,
        state: RTCPeerConnectionState,
    },
    /// A publisher's track reached the relay.
    TrackArrived {
        participant: ParticipantId,
        remote: Arc<dyn TrackRemote>,
    },
}

/// Where a peer connection's events go.
pub type PeerEvents = Arc<dyn Fn(PeerEvent) + Send + Sync>;

/// UDP ports for media when a range is configured; each peer connection holds one.
#[derive(Clone, Debug)]
pub struct PortPool(Arc<Mutex<VecDeque<u16>>>, usize);

impl PortPool {
    pub fn new(first: u16, last: u16) -> Self {
        let ports: VecDeque<u16> = (first..=last).collect();
        let total = ports.len();
        PortPool(Arc::new(Mutex::new(ports)), total)
    }

    pub fn total(&self) -> usize {
        self.1
    }

    fn take(&self) -> Option<PortLease> {
        let port = self.0.lock().expect("port pool lock").pop_front()?;
        Some(PortLease {
            pool: self.clone(),
            port,
        })
    }

    pub fn free(&self) -> usize {
        self.0.lock().expect("port pool lock").len()
    }
}

/// A port taken from the pool; it goes back (to the end, so it rests a while) when dropped.
#[derive(Debug)]
pub struct PortLease {
    pool: PortPool,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool
            .0
            .lock()
            .expect("port pool lock")
            .push_back(self.port);
    }
}

/// One of the relay's peer connections, with what it holds.
pub struct PeerLink {
    pub pc: Arc<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    /// Announced instead of the bound address (1:1 NAT).
    public_ip: Option<IpAddr>,
    _port: Option<PortLease>,
}

impl PeerLink {
    /// The local description once the relay's candidates are in it.
    pub async fn local_sdp(&mut self) -> Result<String, MediaError> {
        let _ = tokio::time::timeout(GATHER_TIMEOUT, self.gathered.wait_for(|done| *done)).await;
        let sdp = self
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Relay("no local description".into()))?;
        Ok(match self.public_ip {
            Some(public) => super::sdp::announce_public_ip(&sdp, public),
            None => sdp,
        })
    }

    pub async fn close(self) {
        if let Err(err) = self.pc.close().await {
            tracing::debug!(error = %err, "closing a peer connection failed");
        }
    }
}

/// Makes peer connections configured for the relay.
pub struct PeerFactory {
    bind_ip: IpAddr,
    public_ip: Option<IpAddr>,
    ports: Option<PortPool>,
}

impl PeerFactory {
    pub fn new(config: &MediaConfig) -> Self {
        PeerFactory {
            bind_ip: config.bind_ip,
            public_ip: config.public_ip,
            ports: config
                .udp_ports
                .map(|(first, last)| PortPool::new(first, last)),
        }
    }

    pub fn ports(&self) -> Option<&PortPool> {
        self.ports.as_ref()
    }

    pub async fn build(
        &self,
        participant: ParticipantId,
        transport: Transport,
        events: PeerEvents,
    ) -> Result<PeerLink, MediaError> {
        let attempts = if self.ports.is_some() {
            BIND_ATTEMPTS
        } else {
            1
        };
        let mut last_error = None;
        for _ in 0..attempts {
            let lease = match &self.ports {
                Some(pool) => Some(pool.take().ok_or_else(|| {
                    MediaError::Relay("every configured media UDP port is in use".into())
                })?),
                None => None,
            };
            let port = lease.as_ref().map_or(0, |l| l.port);
            match self
                .try_build(participant, transport, events.clone(), port)
                .await
            {
                Ok((pc, gathered)) => {
                    return Ok(PeerLink {
                        pc,
                        gathered,
                        public_ip: self.public_ip,
                        _port: lease,
                    })
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(MediaError::Relay(format!(
            "cannot open a peer connection: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    async fn try_build(
        &self,
        participant: ParticipantId,
        transport: Transport,
        events: PeerEvents,
        port: u16,
    ) -> Result<(Arc<dyn PeerConnection>, watch::Receiver<bool>), webrtc::error::Error> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?
            .with(SLOT.into(), FeedbackInterceptor::default());
        let settings =
            SettingEngineBuilder::new().with_include_loopback_candidate(self.bind_ip.is_loopback());
        let (gathered_tx, gathered) = watch::channel(false);
        let handler = PeerHandler {
            participant,
            transport,
            events,
            gathered: gathered_tx,
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(vec![SocketAddr::new(self.bind_ip, port)])
            .build()
            .await?;
        Ok((Arc::new(pc), gathered))
    }
}

/// Turns one peer connection's callbacks into [`PeerEvent`]s for its session.
struct PeerHandler {
    participant: ParticipantId,
    transport: Transport,
    events: PeerEvents,
    gathered: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_ice_candidate_error(&self, event: RTCPeerConnectionIceErrorEvent) {
        tracing::debug!(participant = %self.participant, code = event.error_code, url = %event.url, "ICE candidate error");
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(participant = %self.participant, transport = ?self.transport, %state, "peer connection state");
        (self.events)(PeerEvent::State {
            participant: self.participant,
            transport: self.transport,
            state,
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        (self.events)(PeerEvent::TrackArrived {
            participant: self.participant,
            remote: track,
        });
    }
}
