//! Negotiating permessage-deflate (RFC 7692 §5, §7.1). The server's side is here: reading the
//! client's `Sec-WebSocket-Extensions` offers, picking the first one this server can honour,
//! and the response header that accepts it. The client's side (its offer, and the check of
//! the answer) is [`DeflateOffer`]; both read parameters with the same parser.
//!
//! An offer this server cannot honour, or one that breaks §7's rules (an unknown parameter, a
//! repeated one, a bad value), is declined by not answering it; the handshake itself never
//! fails because of an extension header. The next offer is then considered.

mod client;

pub use client::DeflateOffer;

use crate::deflate::Outgoing;
use crate::event::Role;

/// The server's own settings for permessage-deflate (the `--deflate-*` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// The largest LZ77 window this server compresses with, 8-15 bits. Below 15 the server
    /// only compresses messages that fit the window (see [`Negotiated::outgoing`]).
    pub window_bits: u8,
    /// Compress every message on its own (`server_no_context_takeover`): no compressor is
    /// kept per connection, and a broadcast is compressed once for all such receivers.
    pub no_context_takeover: bool,
    /// Messages shorter than this go out uncompressed.
    pub threshold: usize,
    /// Compression level, 0 (store) to 9 (smallest).
    pub level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            window_bits: MAX_WINDOW_BITS,
            no_context_takeover: false,
            threshold: 64,
            level: 6,
        }
    }
}

/// §7.1.2.1: window bits are "a decimal integer value without leading zeros from 8 to 15".
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest window: 32 KiB.
pub const MAX_WINDOW_BITS: u8 = 15;

/// The extension's registered name (§7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// What was agreed for one connection, in the parameters' own terms (`server_*` govern what
/// the server sends, `client_*` what the client sends), with this end's own threshold and
/// level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The server compresses each message with a fresh context.
    pub server_no_context_takeover: bool,
    /// The client compresses each message with a fresh context: the server's inflater need
    /// not outlive a message.
    pub client_no_context_takeover: bool,
    /// The window of the server's compressor, as told to the client.
    pub server_max_window_bits: u8,
    /// A limit on the client's window, when the server answered one (or the client offered
    /// one and the server left it).
    pub client_max_window_bits: Option<u8>,
    /// Messages shorter than this go out uncompressed (this end's setting).
    pub threshold: usize,
    /// Compression level 0-9 (this end's setting).
    pub level: u8,
}

impl Negotiated {
    /// Whether the end playing `role` compresses each message with a fresh context, and the
    /// largest window it may use (bits).
    pub fn sender_rules(&self, role: Role) -> (bool, u8) {
        match role {
            Role::Server => (self.server_no_context_takeover, self.server_max_window_bits),
            Role::Client => (
                self.client_no_context_takeover,
                self.client_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            ),
        }
    }

    /// How the end playing `role` sends a message of `len` bytes. The compressor always uses
    /// a 32 KiB window; with a smaller agreed window, a message is compressed only when it is
    /// no longer than the window, and then on its own, so that no back-reference reaches
    /// further than the receiver's window (§7.1.2.1, §7.1.2.2: the sender "MUST NOT" use a
    /// larger window than agreed).
    pub fn outgoing(&self, role: Role, len: usize) -> Outgoing {
        let (no_context_takeover, bits) = self.sender_rules(role);
        let small_window = bits < MAX_WINDOW_BITS;
        if len < self.threshold || (small_window && len > 1usize << bits) {
            Outgoing::Plain
        } else if no_context_takeover || small_window {
            Outgoing::Fresh
        } else {
            Outgoing::Stream
        }
    }

    /// The `Sec-WebSocket-Extensions` value of the 101 response (§7.1).
    pub fn response_header(&self) -> String {
        Params {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: (self.server_max_window_bits < MAX_WINDOW_BITS)
                .then_some(self.server_max_window_bits),
            client_max_window_bits: self.client_max_window_bits.map(Some),
        }
        .header_value()
    }
}

/// One element's parameters, each at most once (§7: "multiple extension parameters with the
/// same name" decline an offer and fail a response).
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: given without a value.
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// The element as it is written in a `Sec-WebSocket-Extensions` header.
    fn header_value(&self) -> String {
        let mut out = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => out.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => out.push_str("; client_max_window_bits"),
            None => {}
        }
        out
    }
}

/// Why an element of an extension list is not well-formed permessage-deflate (§7): a server
/// declines such an offer, a client fails the connection on such an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BadElement {
    /// Another extension.
    OtherExtension(String),
    /// A parameter given twice.
    Repeated(String),
    /// A parameter §7 does not define.
    Unknown(String),
    /// A parameter with a value it cannot have.
    BadValue(String),
}

impl std::fmt::Display for BadElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadElement::OtherExtension(name) => write!(f, "extension {name:?}"),
            BadElement::Repeated(p) => write!(f, "parameter {p} more than once"),
            BadElement::Unknown(p) => write!(f, "unknown parameter {p:?}"),
            BadElement::BadValue(p) => write!(f, "a bad value for {p}"),
        }
    }
}

/// Picks the first acceptable permessage-deflate offer among the values of every
/// `Sec-WebSocket-Extensions` header (in order), and what the server answers to it.
/// `None`: nothing to accept (no offer, or none this server honours); the 101 then carries
/// no extension header and frames are never compressed.
pub fn negotiate<'a>(
    config: &DeflateConfig,
    header_values: impl IntoIterator<Item = &'a str>,
) -> Option<Negotiated> {
    header_values
        .into_iter()
        .flat_map(split_outside_quotes(','))
        .filter_map(|element| parse_params(element).ok())
        .find_map(|offer| accept(config, &offer))
}

/// The answer to one well-formed offer, or `None` to decline it.
fn accept(config: &DeflateConfig, offer: &Params) -> Option<Negotiated> {
    let ours = config.window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    // §7.1.2.1: the server uses at most what the client allows, and may use less.
    let server_bits = offer
        .server_max_window_bits
        .unwrap_or(MAX_WINDOW_BITS)
        .min(ours);
    // §7.1.2.2: "If a received extension negotiation offer doesn't have the
    // client_max_window_bits extension parameter, the corresponding extension negotiation
    // response to the offer MUST NOT include the client_max_window_bits extension
    // parameter." Offered without a value, ours is answered; with one, ours only if smaller
    // (the inflater takes any window, so the knob limits the client and never us).
    let client_bits = match offer.client_max_window_bits {
        None => None,
        Some(None) => Some(ours),
        Some(Some(bits)) => (ours < bits).then_some(ours),
    };
    Some(Negotiated {
        // §7.1.1.1: a server accepting an offer with server_no_context_takeover "MUST
        // include" it; it "MAY include" it otherwise, which it does when configured so or
        // when its 32 KiB-window compressor must keep each message to itself.
        server_no_context_takeover: offer.server_no_context_takeover
            || config.no_context_takeover
            || server_bits < MAX_WINDOW_BITS,
        // §7.1.1.2: acknowledged when offered; the inflater is then freed between messages.
        client_no_context_takeover: offer.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        threshold: config.threshold,
        level: config.level.min(9),
    })
}

/// Parses one element of an extension list (`name *( ";" param )`, RFC 6455 §9.1) as
/// permessage-deflate parameters.
fn parse_params(element: &str) -> Result<Params, BadElement> {
    let mut parts = split_outside_quotes(';')(element);
    let name = parts.next().unwrap_or_default().trim();
    if !name.eq_ignore_ascii_case(EXTENSION_NAME) {
        return Err(BadElement::OtherExtension(name.to_owned()));
    }
    let mut params = Params::default();
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (param.trim(), None),
        };
        let bad_value = || BadElement::BadValue(key.to_owned());
        let repeated = || BadElement::Repeated(key.to_owned());
        // A value is a window size (§7.1.2): 8-15, maybe quoted.
        let bits = || {
            value
                .map(|v| unquote(v).and_then(window_bits).ok_or_else(bad_value))
                .transpose()
        };
        match key {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                let flag = if key.starts_with("server") {
                    &mut params.server_no_context_takeover
                } else {
                    &mut params.client_no_context_takeover
                };
                if value.is_some() {
                    return Err(bad_value());
                }
                if std::mem::replace(flag, true) {
                    return Err(repeated());
                }
            }
            "server_max_window_bits" => {
                let bits = bits()?.ok_or_else(bad_value)?;
                if params.server_max_window_bits.replace(bits).is_some() {
                    return Err(repeated());
                }
            }
            "client_max_window_bits" => {
                if params.client_max_window_bits.replace(bits()?).is_some() {
                    return Err(repeated());
                }
            }
            // §7: "The negotiation offer contains an extension parameter not defined for use
            // in an offer", "... with an invalid value", "multiple extension parameters with
            // the same name": the server "MUST decline" it.
            _ => return Err(BadElement::Unknown(key.to_owned())),
        }
    }
    Ok(params)
}

/// §7.1.2.1: "a decimal integer value without leading zeros from 8 to 15, inclusive".
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS)
        .contains(&bits)
        .then_some(bits)
}

/// A parameter value as a token, unquoting a quoted-string (RFC 6455 §9.1: "the value after
/// quoted-string unescaping MUST conform to the 'token' ABNF"). Values here are digits, so a
/// backslash escape is never needed and is refused.
fn unquote(value: &str) -> Option<&str> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => value,
    };
    let token = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    token.then_some(inner)
}

/// Splits on `sep` outside double quotes.
fn split_outside_quotes(sep: char) -> impl Fn(&str) -> std::vec::IntoIter<&str> {
    move |s: &str| {
        let mut parts = Vec::new();
        let (mut start, mut quoted) = (0, false);
        for (i, c) in s.char_indices() {
            if c == '"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                parts.push(&s[start..i]);
                start = i + 1;
            }
        }
        parts.push(&s[start..]);
        parts.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(config: &DeflateConfig, headers: &[&str]) -> Option<String> {
        negotiate(config, headers.iter().copied()).map(|n| n.response_header())
    }

    fn default_answer(headers: &[&str]) -> Option<String> {
        answer(&DeflateConfig::default(), headers)
    }

    #[test]
    fn each_parameter_is_answered_as_rfc_7692_section_7_says() {
        let rows: &[(&str, Option<&str>)] = &[
            ("permessage-deflate", Some("permessage-deflate")),
            // What browsers send.
            (
                "permessage-deflate; client_max_window_bits",
                Some("permessage-deflate; client_max_window_bits=15"),
            ),
            (
                "permessage-deflate; server_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover"),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            (
                "permessage-deflate; server_max_window_bits=15",
                Some("permessage-deflate"),
            ),
            // A smaller server window: accepted, each message compressed on its own.
            (
                "permessage-deflate; server_max_window_bits=8",
                Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=8"),
            ),
            // The client's own limit stands; the inflater takes any window.
            (
                "permessage-deflate; client_max_window_bits=9",
                Some("permessage-deflate"),
            ),
            (
                "permessage-deflate; server_max_window_bits=\"10\"",
                Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
            ),
            // §7: declined, never a failed handshake.
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=7", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=09", None),
            ("permessage-deflate; client_max_window_bits=abc", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            (
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                None,
            ),
            ("permessage-deflate; unknown_param", None),
            ("permessage-deflate; server_max_window_bits=\"1\\0\"", None),
            ("x-webkit-deflate-frame", None),
            ("", None),
        ];
        for (offer, want) in rows {
            assert_eq!(
                default_answer(&[offer]).as_deref(),
                *want,
                "offer {offer:?}"
            );
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins_across_elements_and_headers() {
        // The first offer is declined (bad value), the second accepted.
        assert_eq!(
            default_answer(&[
                "permessage-deflate; server_max_window_bits=99, permessage-deflate; client_no_context_takeover"
            ])
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        // Across header lines, in order.
        assert_eq!(
            default_answer(&[
                "foo; bar=\"a,b\"",
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate",
            ])
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
    }

    #[test]
    fn server_knobs_shape_the_answer() {
        let config = DeflateConfig {
            window_bits: 10,
            no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            answer(&config, &["permessage-deflate; client_max_window_bits=12"]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; \
                 client_max_window_bits=10"
            )
        );
        let n = negotiate(&config, ["permessage-deflate"]).unwrap();
        let server = |len| n.outgoing(Role::Server, len);
        assert_eq!(
            [server(1024), server(1025), server(10)],
            [Outgoing::Fresh, Outgoing::Plain, Outgoing::Plain]
        );
    }
}
