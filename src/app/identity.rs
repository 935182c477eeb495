//! Who a connection is: the user id, the name the chat shows, the channels the user may use,
//! and until when the credential holds. Every way in (a token file, a signed token, the page's
//! session cookie, nobody at all) ends in one [`Identity`].

/// An authenticated (or anonymous) user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user id (a token's `sub`, the token file's or the login's name): what presence
    /// lists and what the server API's `send` and `disconnect` address.
    pub user: String,
    /// The name shown as `from` (a token's `name`, else the user id).
    pub name: String,
    /// The channels the user may subscribe and publish to; `None`: every channel.
    pub channels: Option<ChannelRules>,
    /// When the credential stops being valid, in seconds since the Unix epoch (a token's
    /// `exp`); `None`: it does not expire while the connection is open.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// A user with every channel, whose credential does not expire.
    pub fn named(user: &str, name: &str) -> Identity {
        Identity {
            user: user.to_owned(),
            name: name.to_owned(),
            channels: None,
            expires_at: None,
        }
    }
}

/// Why a credential was refused (logged, and the reason of a 401 or a 4001 close).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No credential where one is required.
    Missing,
    /// A token the token file does not list, or a session cookie this process did not sign.
    Unknown,
    /// Longer than [`MAX_TOKEN`] bytes.
    TooLong,
    /// Not a token at all (not three base64url parts of JSON).
    Malformed,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// Signed with another algorithm than the key's (`none` included).
    WrongAlgorithm,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is still to come (beyond the leeway).
    NotYetValid,
    /// A claim that must be there is not (`sub`, `exp`).
    MissingClaim(&'static str),
    /// A claim has the wrong type (`name` not a string, ...).
    BadClaim(&'static str),
}

/// How far past its `exp` (and before its `nbf`) a token is still honoured: the clocks of
/// the backend that signed it and of this server drift apart.
pub const LEEWAY_SECS: u64 = 30;

/// The longest token looked at: a signed token with a few claims is well under 1 KiB; the
/// limit keeps a client from making the server parse a megabyte-long one in-band.
pub const MAX_TOKEN: usize = 4096;

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => write!(f, "no token"),
            AuthError::Unknown => write!(f, "unknown token"),
            AuthError::TooLong => write!(f, "token longer than {MAX_TOKEN} bytes"),
            AuthError::Malformed => write!(f, "malformed token"),
            AuthError::BadSignature => write!(f, "bad signature"),
            AuthError::WrongAlgorithm => write!(f, "wrong algorithm"),
            AuthError::Expired => write!(f, "token expired"),
            AuthError::NotYetValid => write!(f, "token not yet valid"),
            AuthError::MissingClaim(claim) => write!(f, "claim {claim:?} missing"),
            AuthError::BadClaim(claim) => write!(f, "claim {claim:?} has the wrong type"),
        }
    }
}

/// Channel patterns of a token's `channels` claim: a name matches itself (`news`), and a
/// pattern ending in `*` matches every name it begins (`room:*` matches `room:1`; `*` alone
/// matches everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRules(Vec<String>);

impl ChannelRules {
    /// Rules from a list of patterns (an empty list allows no channel).
    pub fn new(patterns: Vec<String>) -> ChannelRules {
        ChannelRules(patterns)
    }

    /// Whether `channel` matches one of the patterns.
    pub fn allows(&self, channel: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => pattern == channel,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let rules = ChannelRules::new(vec!["news".into(), "room:*".into()]);
        for (channel, allowed) in [
            ("news", true),
            ("news2", false),
            ("new", false),
            ("room:1", true),
            ("room:", true),
            ("room", false),
            ("rooms:1", false),
            ("", false),
        ] {
            assert_eq!(rules.allows(channel), allowed, "{channel:?}");
        }
        assert!(ChannelRules::new(vec!["*".into()]).allows("anything"));
        assert!(!ChannelRules::new(Vec::new()).allows("news"));
    }
}
