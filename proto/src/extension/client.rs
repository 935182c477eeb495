//! The client's side of permessage-deflate negotiation (RFC 7692 §5, §7.1): the offer it
//! sends, and the check of the server's answer. Unlike a server, which declines what it does
//! not like, a client must fail the connection on an answer that breaks a rule (§5: "the
//! client MUST _Fail the WebSocket Connection_"), so every refusal here says why.

use super::{
    parse_params, split_outside_quotes, Negotiated, Params, EXTENSION_NAME, MAX_WINDOW_BITS,
    MIN_WINDOW_BITS,
};

/// What a client offers, and how it compresses what it sends once the server accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateOffer {
    /// Ask the server to compress each message on its own (`server_no_context_takeover`):
    /// this end then keeps an inflater only while a compressed message is arriving.
    pub server_no_context_takeover: bool,
    /// Promise to compress each message on its own (`client_no_context_takeover`): the
    /// server's inflater need not outlive a message.
    pub client_no_context_takeover: bool,
    /// Ask the server to use a window of at most this many bits (8-15).
    pub server_max_window_bits: Option<u8>,
    /// Offer `client_max_window_bits`: 15 offers it without a value, as browsers do (the
    /// server may then limit this end's window); 8-14 also limits this end's window to that.
    /// `None`: not offered, so the server cannot limit it.
    pub client_max_window_bits: Option<u8>,
    /// Messages shorter than this go out uncompressed.
    pub threshold: usize,
    /// Compression level, 0 (store) to 9 (smallest).
    pub level: u8,
}

impl Default for DeflateOffer {
    /// The offer browsers make: `permessage-deflate; client_max_window_bits`.
    fn default() -> Self {
        DeflateOffer {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: Some(MAX_WINDOW_BITS),
            threshold: 64,
            level: 6,
        }
    }
}

impl DeflateOffer {
    /// The `Sec-WebSocket-Extensions` value of the request. Window sizes out of 8-15 are
    /// brought into it.
    pub fn header_value(&self) -> String {
        let clamp = |bits: u8| bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        Params {
            server_no_context_takeover: self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: self.server_max_window_bits.map(clamp),
            client_max_window_bits: self
                .client_max_window_bits
                .map(|bits| (bits < MAX_WINDOW_BITS).then(|| clamp(bits))),
        }
        .header_value()
    }

    /// Checks the server's answer: the values of every `Sec-WebSocket-Extensions` header of
    /// its 101, in order. `Ok(None)`: the server declined (no extension at all); `Ok(Some)`:
    /// what was agreed, to give to [`crate::Connection::with_deflate`]; `Err`: why the
    /// connection must fail.
    pub fn accept<'a>(
        &self,
        header_values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<Negotiated>, String> {
        let mut agreed = None;
        let elements = header_values
            .into_iter()
            .flat_map(split_outside_quotes(','))
            .filter(|element| !element.trim().is_empty());
        for element in elements {
            let params = parse_params(element)
                .map_err(|why| format!("the server answered with {why} (RFC 7692 §5)"))?;
            // One offer was made, so one answer can accept it (RFC 6455 §9.1).
            if agreed.is_some() {
                return Err(format!("the server answered {EXTENSION_NAME} twice"));
            }
            agreed = Some(self.agree(&params)?);
        }
        Ok(agreed)
    }

    /// The agreement an answer makes with this offer, or why the answer breaks §7.1.
    fn agree(&self, answer: &Params) -> Result<Negotiated, String> {
        let refuse = |why: &str| Err(format!("the server's {EXTENSION_NAME} answer {why}"));
        // §7.1.1.1: a server accepting an offer with server_no_context_takeover "MUST
        // include" it in its answer.
        if self.server_no_context_takeover && !answer.server_no_context_takeover {
            return refuse("leaves out the server_no_context_takeover that was asked for");
        }
        // §7.1.2.1: the server accepts a limit on its window by answering it "with the same
        // or smaller value"; it may also name a window when none was asked for.
        let server_bits = match (self.server_max_window_bits, answer.server_max_window_bits) {
            (Some(_), None) => {
                return refuse("leaves out the server_max_window_bits that was asked for")
            }
            (Some(asked), Some(bits)) if bits > asked => {
                return refuse(&format!(
                    "has server_max_window_bits={bits}, more than the {asked} asked for"
                ))
            }
            (_, bits) => bits.unwrap_or(MAX_WINDOW_BITS),
        };
        // §7.1.2.2: the answer "MUST NOT include" client_max_window_bits unless the offer had
        // it, and then with a value no larger than the offer's. Without one, a limit this
        // end offered still binds it.
        let client_bits = match (self.client_max_window_bits, answer.client_max_window_bits) {
            (_, Some(None)) => return refuse("has client_max_window_bits without a value"),
            (None, Some(_)) => return refuse("has client_max_window_bits, which was not offered"),
            (Some(offered), Some(Some(bits))) if bits > offered => {
                return refuse(&format!(
                    "has client_max_window_bits={bits}, more than the {offered} offered"
                ))
            }
            (offered, None) => offered.filter(|&bits| bits < MAX_WINDOW_BITS),
            (_, Some(bits)) => bits,
        };
        Ok(Negotiated {
            // §7.1.1.1: the server "MAY include" it even when not asked.
            server_no_context_takeover: answer.server_no_context_takeover,
            // §7.1.1.2: a client that offered it keeps its promise whether or not the
            // server repeats it; a server may also ask for it.
            client_no_context_takeover: self.client_no_context_takeover
                || answer.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            threshold: self.threshold,
            level: self.level.min(9),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Outgoing;
    use crate::event::Role;

    fn offer() -> DeflateOffer {
        DeflateOffer::default()
    }

    #[test]
    fn offers_as_written_on_the_wire() {
        let rows = [
            (offer(), "permessage-deflate; client_max_window_bits"),
            (
                DeflateOffer {
                    client_max_window_bits: None,
                    ..offer()
                },
                "permessage-deflate",
            ),
            (
                DeflateOffer {
                    server_no_context_takeover: true,
                    client_no_context_takeover: true,
                    server_max_window_bits: Some(10),
                    client_max_window_bits: Some(9),
                    ..offer()
                },
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=9",
            ),
            (
                DeflateOffer {
                    server_max_window_bits: Some(99),
                    client_max_window_bits: Some(1),
                    ..offer()
                },
                "permessage-deflate; server_max_window_bits=15; client_max_window_bits=8",
            ),
        ];
        for (offer, want) in rows {
            assert_eq!(offer.header_value(), want);
        }
    }

    /// (the agreement's four parameters) for an answer to `offer`.
    fn agreed(offer: &DeflateOffer, answer: &[&str]) -> Result<Option<[String; 4]>, String> {
        let n = offer.accept(answer.iter().copied())?;
        Ok(n.map(|n| {
            [
                n.server_no_context_takeover.to_string(),
                n.client_no_context_takeover.to_string(),
                n.server_max_window_bits.to_string(),
                format!("{:?}", n.client_max_window_bits),
            ]
        }))
    }

    #[test]
    fn answers_that_agree() {
        let limited = DeflateOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(12),
            client_max_window_bits: Some(11),
            ..offer()
        };
        /// An offer, the server's answer, and the agreement (`None`: declined).
        type Row<'a> = (&'a DeflateOffer, &'a [&'a str], Option<[&'a str; 4]>);
        let rows: &[Row] = &[
            // The server declined: no extension header.
            (&offer(), &[], None),
            (&offer(), &[""], None),
            (
                &offer(),
                &["permessage-deflate"],
                Some(["false", "false", "15", "None"]),
            ),
            // What wsloop answers a browser-style offer.
            (
                &offer(),
                &["permessage-deflate; client_max_window_bits=15"],
                Some(["false", "false", "15", "Some(15)"]),
            ),
            // The server may limit its own window, and ask for no context takeover, unasked.
            (
                &offer(),
                &["Permessage-Deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=\"9\"; client_max_window_bits=8"],
                Some(["true", "true", "9", "Some(8)"]),
            ),
            // The offer's own limits stand when the answer leaves them out.
            (
                &limited,
                &["permessage-deflate; server_no_context_takeover; server_max_window_bits=12"],
                Some(["true", "true", "12", "Some(11)"]),
            ),
            (
                &limited,
                &["permessage-deflate; server_no_context_takeover; server_max_window_bits=8; client_max_window_bits=10"],
                Some(["true", "true", "8", "Some(10)"]),
            ),
        ];
        for (offer, answer, want) in rows {
            let want = want.map(|w| w.map(str::to_owned));
            assert_eq!(agreed(offer, answer), Ok(want), "answer {answer:?}");
        }
    }

    #[test]
    fn answers_that_fail_the_connection() {
        let asking = DeflateOffer {
            server_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
            ..offer()
        };
        let without_client_bits = DeflateOffer {
            client_max_window_bits: None,
            ..offer()
        };
        let pd = "permessage-deflate";
        let rows: &[(&DeflateOffer, &[&str], &str)] = &[
            (&offer(), &["x-webkit-deflate-frame"], "the server answered with extension \"x-webkit-deflate-frame\" (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate, permessage-deflate"], "the server answered permessage-deflate twice"),
            (&offer(), &[pd, pd], "the server answered permessage-deflate twice"),
            (&offer(), &["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], "the server answered with parameter server_no_context_takeover more than once (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"], "the server answered with parameter server_max_window_bits more than once (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; mystery"], "the server answered with unknown parameter \"mystery\" (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; server_max_window_bits=16"], "the server answered with a bad value for server_max_window_bits (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; server_max_window_bits=08"], "the server answered with a bad value for server_max_window_bits (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; server_max_window_bits"], "the server answered with a bad value for server_max_window_bits (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; client_no_context_takeover=1"], "the server answered with a bad value for client_no_context_takeover (RFC 7692 §5)"),
            (&offer(), &["permessage-deflate; client_max_window_bits"], "the server's permessage-deflate answer has client_max_window_bits without a value"),
            (&without_client_bits, &["permessage-deflate; client_max_window_bits=15"], "the server's permessage-deflate answer has client_max_window_bits, which was not offered"),
            (&asking, &["permessage-deflate; server_max_window_bits=10"], "the server's permessage-deflate answer leaves out the server_no_context_takeover that was asked for"),
            (&asking, &["permessage-deflate; server_no_context_takeover"], "the server's permessage-deflate answer leaves out the server_max_window_bits that was asked for"),
            (&asking, &["permessage-deflate; server_no_context_takeover; server_max_window_bits=11"], "the server's permessage-deflate answer has server_max_window_bits=11, more than the 10 asked for"),
            (&asking, &["permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13"], "the server's permessage-deflate answer has client_max_window_bits=13, more than the 12 offered"),
        ];
        for (offer, answer, want) in rows {
            assert_eq!(
                agreed(offer, answer),
                Err((*want).to_owned()),
                "answer {answer:?}"
            );
        }
    }

    #[test]
    fn each_end_follows_its_own_parameters() {
        let n = offer()
            .accept(["permessage-deflate; client_no_context_takeover; client_max_window_bits=9"])
            .unwrap()
            .unwrap();
        // The client: its own window of 512 bytes, each message on its own.
        assert_eq!(n.sender_rules(Role::Client), (true, 9));
        assert_eq!(n.outgoing(Role::Client, 512), Outgoing::Fresh);
        assert_eq!(n.outgoing(Role::Client, 513), Outgoing::Plain);
        assert_eq!(n.outgoing(Role::Client, 63), Outgoing::Plain);
        // The server: context takeover and the full window.
        assert_eq!(n.sender_rules(Role::Server), (false, 15));
        assert_eq!(n.outgoing(Role::Server, 100_000), Outgoing::Stream);
    }
}
