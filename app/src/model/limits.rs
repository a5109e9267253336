//! Every size limit of a campaign, in one place. The server enforces them; the browser uses the same
//! numbers to warn before sending. docs/protocol.md lists them for third-party clients.

/// Longest title, in characters.
pub const TITLE_MAX_CHARS: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
/// Most features a campaign can have.
pub const FEATURES_MAX: usize = 64;
/// Longest feature name, in bytes (features are ASCII).
pub const FEATURE_NAME_MAX: usize = 32;
/// Most config sections a campaign can have.
pub const CONFIG_SECTIONS_MAX: usize = 32;
/// Longest config section name, in bytes.
pub const SECTION_NAME_MAX: usize = 32;
/// Largest config section, serialized as compact JSON, in bytes.
pub const CONFIG_SECTION_MAX_BYTES: usize = 16 * 1024;
/// Deepest nesting inside a config section (the section object itself is depth 1).
pub const CONFIG_MAX_DEPTH: usize = 8;
/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 40;
/// Most members (people granted a role) a campaign can have.
pub const MEMBERS_MAX: usize = 1000;
/// The shortest and longest an invite link may be made to last, in seconds (5 minutes, 30 days).
pub const INVITE_LIFETIME_SECS: std::ops::RangeInclusive<u64> = 300..=30 * 24 * 3600;
/// How long an invite link lasts unless its maker chooses.
pub const INVITE_DEFAULT_LIFETIME_SECS: u64 = 7 * 24 * 3600;
/// Invite links a campaign keeps: links that let nobody in any more make room for new ones,
/// oldest first; open ones never do.
pub const INVITES_KEPT: usize = 50;
/// People listed per invite link (the latest; every use is counted). With [`INVITES_KEPT`] this
/// bounds what a campaign keeps about its links to about 300 KB (display names of 40 characters
/// of up to 4 bytes each).
pub const INVITE_USES_LISTED: usize = 20;
