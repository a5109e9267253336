//! The one interceptor Rally adds to WebRTC's chain: it lets subscribers' keyframe requests reach
//! the relay, and counts the feedback subscribers send.
//!
//! By default inbound RTCP stops inside the interceptor chain (NACKs are answered there from the
//! sender's retransmission buffer, receiver reports feed its statistics). PLI and FIR must go
//! further — to the publisher, who alone can make a keyframe — so compound packets holding one
//! are marked for delivery to the application, which relays them (rate limited by the
//! forwarding table). Everything passes through unchanged.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;

/// Where the interceptor sits: after every built-in one on the way in, so they all still see
/// the packets it marks.
pub const SLOT: usize = 14_000;

#[derive(Default)]
pub struct FeedbackInterceptor {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let mut keyframe = false;
            for packet in packets {
                let any = packet.as_any();
                if any.is::<PictureLossIndication>() {
                    metrics::counter!("rally_media_rtcp_feedback_total", "kind" => "pli")
                        .increment(1);
                    keyframe = true;
                } else if any.is::<FullIntraRequest>() {
                    metrics::counter!("rally_media_rtcp_feedback_total", "kind" => "fir")
                        .increment(1);
                    keyframe = true;
                } else if any.is::<TransportLayerNack>() {
                    metrics::counter!("rally_media_rtcp_feedback_total", "kind" => "nack")
                        .increment(1);
                }
            }
            if keyframe {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
