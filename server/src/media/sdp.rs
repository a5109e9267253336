//! First checks on SDP from a browser, before WebRTC parses it: size, shape, and how many tracks
//! it wants to send (so "too many tracks" is refused before any resources are taken).

use rally_app::protocol::media::SDP_MAX_BYTES;

use super::call::MediaError;

/// What the relay needs to know of a client's SDP up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpSummary {
    /// Audio and video sections the client sends on (`sendonly`/`sendrecv`, port not 0).
    pub sending: usize,
    /// All audio and video sections.
    pub media_sections: usize,
    /// Track ids (`a=msid:<stream> <track>`) of the sections that send, when they name one.
    pub sending_tracks: Vec<String>,
}

pub fn check(sdp: &str) -> Result<SdpSummary, MediaError> {
    if sdp.len() > SDP_MAX_BYTES {
        return Err(MediaError::TooLarge {
            what: "sdp",
            max: SDP_MAX_BYTES,
        });
    }
    if !sdp.starts_with("v=0") {
        return Err(MediaError::InvalidSdp("an SDP starts with `v=0`".into()));
    }
    let mut summary = SdpSummary {
        sending: 0,
        media_sections: 0,
        sending_tracks: Vec::new(),
    };
    // (is audio/video, port is not 0, direction sends, msid track)
    type Section = (bool, bool, bool, Option<String>);
    let mut section: Option<Section> = None;
    let close = |section: Option<Section>, summary: &mut SdpSummary| {
        if let Some((true, open, sends, track)) = section {
            summary.media_sections += 1;
            if open && sends {
                summary.sending += 1;
                summary.sending_tracks.extend(track);
            }
        }
    };
    // Every media section names itself (`a=mid`): the relay's answer and BUNDLE need it, and a
    // section without one would leave the peer connection half-negotiated.
    let mut sections = 0usize;
    let mut with_mid = 0usize;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=mid:") && sections > with_mid {
            with_mid += 1;
        }
        if let Some(media) = line.strip_prefix("m=") {
            if sections > with_mid {
                return Err(MediaError::InvalidSdp(format!(
                    "media section {sections} has no a=mid line"
                )));
            }
            sections += 1;
            close(section.take(), &mut summary);
            let mut parts = media.split_whitespace();
            let kind = parts.next().unwrap_or_default();
            let port = parts.next().unwrap_or_default();
            let av = kind == "audio" || kind == "video";
            // Directions default to sendrecv (RFC 8866 §6.7).
            section = Some((av, port != "0", true, None));
        } else if let Some((_, _, sends, track)) = section.as_mut() {
            match line {
                "a=sendonly" | "a=sendrecv" => *sends = true,
                "a=recvonly" | "a=inactive" => *sends = false,
                _ => {
                    if let Some(msid) = line.strip_prefix("a=msid:") {
                        *track = msid.split_whitespace().nth(1).map(str::to_owned);
                    }
                }
            }
        }
    }
    close(section, &mut summary);
    if sections > with_mid {
        return Err(MediaError::InvalidSdp(format!(
            "media section {sections} has no a=mid line"
        )));
    }
    if summary.media_sections == 0 && !sdp.contains("m=application") {
        return Err(MediaError::InvalidSdp(
            "the SDP has no media sections".into(),
        ));
    }
    Ok(summary)
}

/// The relay's SDP as browsers behind the internet must see it when the relay sits behind 1:1 NAT:
/// every host candidate announces `public` instead of the bound address (the port is the same on
/// both sides of a 1:1 NAT). `webrtc` 0.21.1 accepts a NAT 1:1 setting but never applies it, so
/// the relay rewrites its own SDP.
pub fn announce_public_ip(sdp: &str, public: std::net::IpAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        let ending = &line[body.len()..];
        let mut fields: Vec<&str> = body.split(' ').collect();
        // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> …
        let host = body.starts_with("a=candidate:")
            && fields.len() >= 8
            && fields[6] == "typ"
            && fields[7] == "host";
        if host {
            let address = public.to_string();
            fields[4] = &address;
            out.push_str(&fields.join(" "));
            out.push_str(ending);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\na=msid:s mic\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:s cam\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n";

    #[test]
    fn counts_the_sections_that_send() {
        let summary = check(OFFER).unwrap();
        assert_eq!(summary.media_sections, 4);
        assert_eq!(summary.sending, 2);
        assert_eq!(summary.sending_tracks, ["mic", "cam"]);
    }

    #[test]
    fn host_candidates_announce_the_public_ip() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
                   a=candidate:2 1 udp 1694498815 198.51.100.1 50001 typ srflx raddr 10.0.0.5 rport 50000\r\n";
        let public: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            announce_public_ip(sdp, public),
            "v=0\r\na=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host\r\n\
             a=candidate:2 1 udp 1694498815 198.51.100.1 50001 typ srflx raddr 10.0.0.5 rport 50000\r\n"
        );
    }

    #[test]
    fn refuses_what_is_not_sdp() {
        assert!(matches!(check("hello"), Err(MediaError::InvalidSdp(_))));
        assert!(matches!(
            check("v=0\r\ns=-\r\n"),
            Err(MediaError::InvalidSdp(_))
        ));
        let huge = format!("v=0\r\n{}", "a=x\r\n".repeat(SDP_MAX_BYTES));
        assert!(matches!(check(&huge), Err(MediaError::TooLarge { .. })));
        let no_mid = OFFER.replace("a=mid:2\r\n", "");
        assert!(
            matches!(check(&no_mid), Err(MediaError::InvalidSdp(m)) if m.contains("section 3")),
            "every media section names itself"
        );
        let last_without = format!("{OFFER}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n");
        assert!(matches!(
            check(&last_without),
            Err(MediaError::InvalidSdp(_))
        ));
    }
}
