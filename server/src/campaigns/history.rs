//! A campaign's recent events, encoded once and shared with its subscribers' connections.
//!
//! Resuming and lagging subscribers copy these bytes (reference counts) themselves, without
//! asking the campaign's task and without serializing again: a burst of laggards must not turn
//! into a burst of work for the one task that also commits writes. Only that task writes here.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use crate::frames::Frame;

/// Frames of state events, oldest first, contiguous in version.
#[derive(Clone, Default)]
pub struct EncodedHistory {
    frames: Arc<RwLock<VecDeque<Frame>>>,
}

impl EncodedHistory {
    pub(super) fn replace(&self, frames: VecDeque<Frame>) {
        *self.frames.write().expect("history lock") = frames;
    }

    /// Append the next version, dropping the oldest beyond `limit`.
    pub(super) fn push(&self, frame: Frame, limit: usize) {
        let mut frames = self.frames.write().expect("history lock");
        while frames.len() >= limit.max(1) {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    pub(super) fn newest(&self) -> Option<Frame> {
        self.frames.read().expect("history lock").back().cloned()
    }

    /// The frame of `version`, if kept.
    pub(super) fn get(&self, version: u64) -> Option<Frame> {
        let frames = self.frames.read().expect("history lock");
        let first = frames.front()?.version?;
        let frame = frames.get(version.checked_sub(first)? as usize)?;
        (frame.version == Some(version)).then(|| frame.clone())
    }

    /// Every frame after `version`, if the history still holds `version + 1` (None otherwise).
    pub fn after(&self, version: u64) -> Option<Vec<Frame>> {
        let frames = self.frames.read().expect("history lock");
        let first = frames.front()?.version?;
        if first > version + 1 {
            return None;
        }
        let skip = (version + 1 - first) as usize;
        Some(frames.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(version: u64) -> Frame {
        Frame {
            version: Some(version),
            text: format!("v{version}").into(),
            durable_at: None,
        }
    }

    fn versions(frames: Option<Vec<Frame>>) -> Option<Vec<u64>> {
        frames.map(|f| f.iter().filter_map(|f| f.version).collect())
    }

    #[test]
    fn keeps_the_newest_frames_and_answers_what_it_still_holds() {
        let history = EncodedHistory::default();
        assert_eq!(versions(history.after(0)), None, "empty");
        for v in 1..=5 {
            history.push(frame(v), 3);
        }
        assert_eq!(versions(history.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(versions(history.after(4)), Some(vec![5]));
        assert_eq!(versions(history.after(5)), Some(vec![]), "up to date");
        assert_eq!(versions(history.after(1)), None, "version 2 is gone");
        assert_eq!(history.get(4).and_then(|f| f.version), Some(4));
        assert!(history.get(2).is_none());
        assert_eq!(history.newest().and_then(|f| f.version), Some(5));
    }
}
