//! A campaign's recent events, encoded once and shared with its subscribers' connections.
//!
//! Resuming and lagging subscribers copy these bytes (reference counts) themselves, without
//! asking the campaign's task and without serializing again: a burst of laggards must not turn
//! into a burst of work for the one task that also commits writes. Only that task writes here.
//!
//! The history is bounded twice: by events and by encoded bytes ([`HistoryLimits`]), so a
//! campaign of large events holds fewer of them, and what one resuming subscriber is sent is
//! bounded in bytes too. The campaign's core keeps the same window (the writer trims it to
//! [`EncodedHistory::first_version`]).

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use crate::frames::Frame;

/// How much history a campaign keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept.
    pub events: usize,
    /// Encoded bytes kept (the newest event is kept whatever its size).
    pub bytes: usize,
}

/// Frames of state events, oldest first, contiguous in version.
#[derive(Clone, Default)]
pub struct EncodedHistory {
    kept: Arc<RwLock<Kept>>,
}

#[derive(Default)]
struct Kept {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Kept {
    fn push(&mut self, frame: Frame, limits: HistoryLimits) {
        let size = frame.text.len();
        while !self.frames.is_empty()
            && (self.frames.len() >= limits.events.max(1) || self.bytes + size > limits.bytes)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.text.len();
            }
        }
        self.bytes += size;
        self.frames.push_back(frame);
    }
}

impl EncodedHistory {
    /// Start over with `frames` (ascending), keeping the newest within `limits`.
    pub(super) fn replace(&self, frames: impl IntoIterator<Item = Frame>, limits: HistoryLimits) {
        let mut kept = Kept::default();
        for frame in frames {
            kept.push(frame, limits);
        }
        *self.kept.write().expect("history lock") = kept;
    }

    /// Append the next version, dropping the oldest beyond `limits`.
    pub(super) fn push(&self, frame: Frame, limits: HistoryLimits) {
        self.kept.write().expect("history lock").push(frame, limits);
    }

    /// The oldest version kept.
    pub(super) fn first_version(&self) -> Option<u64> {
        self.kept
            .read()
            .expect("history lock")
            .frames
            .front()?
            .version
    }

    /// Encoded bytes kept.
    pub fn bytes(&self) -> usize {
        self.kept.read().expect("history lock").bytes
    }

    pub(super) fn newest(&self) -> Option<Frame> {
        self.kept
            .read()
            .expect("history lock")
            .frames
            .back()
            .cloned()
    }

    /// The frame of `version`, if kept.
    pub(super) fn get(&self, version: u64) -> Option<Frame> {
        let kept = self.kept.read().expect("history lock");
        let first = kept.frames.front()?.version?;
        let frame = kept.frames.get(version.checked_sub(first)? as usize)?;
        (frame.version == Some(version)).then(|| frame.clone())
    }

    /// Every frame after `version`, if the history still holds `version + 1` (None otherwise).
    pub fn after(&self, version: u64) -> Option<Vec<Frame>> {
        let kept = self.kept.read().expect("history lock");
        let first = kept.frames.front()?.version?;
        if first > version + 1 {
            return None;
        }
        let skip = (version + 1 - first) as usize;
        Some(kept.frames.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u64) -> Frame {
        sized(version, 2)
    }

    /// A frame of `version` that is `size` bytes long.
    fn sized(version: u64, size: usize) -> Frame {
        Frame {
            version: Some(version),
            text: "x".repeat(size).into(),
            durable_at: None,
            changes_access: false,
        }
    }

    const BY_COUNT: HistoryLimits = HistoryLimits {
        events: 3,
        bytes: usize::MAX,
    };

    fn versions(frames: Option<Vec<Frame>>) -> Option<Vec<u64>> {
        frames.map(|f| f.iter().filter_map(|f| f.version).collect())
    }

    #[test]
    fn keeps_the_newest_frames_and_answers_what_it_still_holds() {
        let history = EncodedHistory::default();
        assert_eq!(versions(history.after(0)), None, "empty");
        for v in 1..=5 {
            history.push(frame(v), BY_COUNT);
        }
        assert_eq!(versions(history.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(versions(history.after(4)), Some(vec![5]));
        assert_eq!(versions(history.after(5)), Some(vec![]), "up to date");
        assert_eq!(versions(history.after(1)), None, "version 2 is gone");
        assert_eq!(history.get(4).and_then(|f| f.version), Some(4));
        assert!(history.get(2).is_none());
        assert_eq!(history.newest().and_then(|f| f.version), Some(5));
    }

    #[test]
    fn large_events_are_kept_by_bytes_and_the_newest_always() {
        let limits = HistoryLimits {
            events: 1000,
            bytes: 100,
        };
        let history = EncodedHistory::default();
        for v in 1..=10 {
            history.push(sized(v, 30), limits);
        }
        assert_eq!(
            history.first_version(),
            Some(8),
            "three 30-byte frames fit in 100"
        );
        assert_eq!(history.bytes(), 90);
        history.push(sized(11, 500), limits);
        assert_eq!(
            history.first_version(),
            Some(11),
            "an oversized newest event stays alone"
        );
        assert_eq!(history.bytes(), 500);
        history.replace((1..=10).map(|v| sized(v, 40)), limits);
        assert_eq!(history.first_version(), Some(9));
    }
}
