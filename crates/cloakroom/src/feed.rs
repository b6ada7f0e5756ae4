//! The revocation feed's wire format: the events of `GET /auth/revocations` (Server-Sent
//! Events), one type written by the server and read by the remote verifier.
//!
//! - `revoked` `{"sid": "<session id>", "exp": <unix seconds>}`: refuse the session's tokens
//!   until `exp`;
//! - `reset` `{"before": <unix seconds>}`: the session store lost every session; refuse every
//!   token issued at or before `before`;
//! - `synced` `{}`: the list of sessions revoked so far is complete.

use serde::{Deserialize, Serialize};

/// One event of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A session ended before its time.
    Revoked(Revoked),
    /// Every session was lost.
    Reset(Reset),
    /// The initial list is complete.
    Synced,
}

/// The data of a `revoked` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The session id (`sid` of its access tokens).
    pub sid: String,
    /// When its tokens expire anyway (unix seconds).
    pub exp: i64,
}

/// The data of a `reset` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// Tokens issued at or before this time (unix seconds) are refused.
    pub before: i64,
}

impl FeedEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Revoked(_) => "revoked",
            Self::Reset(_) => "reset",
            Self::Synced => "synced",
        }
    }

    /// The SSE data: the event's fields as JSON.
    pub fn data(&self) -> String {
        let json = match self {
            Self::Revoked(r) => serde_json::to_string(r),
            Self::Reset(r) => serde_json::to_string(r),
            Self::Synced => Ok("{}".to_string()),
        };
        // Two integers and a string always serialise.
        json.unwrap_or_default()
    }

    /// Reads an event from its SSE name and data; `None` for an event this version does not
    /// know (ignored, so the server may add kinds) or malformed data.
    pub fn parse(name: &str, data: &str) -> Option<Self> {
        match name {
            "revoked" => serde_json::from_str(data).ok().map(Self::Revoked),
            "reset" => serde_json::from_str(data).ok().map(Self::Reset),
            "synced" => Some(Self::Synced),
            _ => None,
        }
    }
}

#[cfg(feature = "engine")]
impl From<crate::Revocation> for FeedEvent {
    fn from(r: crate::Revocation) -> Self {
        match r {
            crate::Revocation::Session { id, expires_at } => Self::Revoked(Revoked {
                sid: id.to_string(),
                exp: expires_at.unix_timestamp(),
            }),
            crate::Revocation::AllBefore(at) => Self::Reset(Reset {
                before: at.unix_timestamp(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_name_and_data() {
        for e in [
            FeedEvent::Revoked(Revoked {
                sid: "s".into(),
                exp: 7,
            }),
            FeedEvent::Reset(Reset { before: 9 }),
            FeedEvent::Synced,
        ] {
            assert_eq!(FeedEvent::parse(e.name(), &e.data()), Some(e));
        }
        assert_eq!(FeedEvent::parse("revoked", "{\"sid\": 1}"), None);
        assert_eq!(FeedEvent::parse("later", "{}"), None);
    }
}
