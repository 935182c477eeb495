//! `wsloop broadcast` over real sockets: every text and binary message from any client goes
//! to every connected client, the sender included, as it came and in order.
//!
//! Server frames are checked byte for byte: FIN, no RSV, the opcode, the unmasked payload
//! (RFC 6455 §5.1, §5.2 minimal length, checked by the raw client).

mod common;

use common::raw::{opcode, Frame, OutFrame, RawClient};
use common::Server;

/// A server frame with FIN set and no RSV bits.
fn frame(opcode: u8, payload: &[u8]) -> Frame {
    Frame {
        fin: true,
        rsv: 0,
        opcode,
        payload: payload.to_vec(),
    }
}

#[test]
fn every_message_goes_to_every_client_the_sender_included() {
    let server = Server::start("broadcast", &[]);
    let mut clients: Vec<RawClient> = (0..3).map(|_| RawClient::open(server.addr)).collect();

    // Text from the first client, then binary (in two fragments, reassembled) from the
    // second, then three messages in one write from the third.
    clients[0].send(&OutFrame::text("hello")).expect("send");
    let hello = frame(opcode::TEXT, b"hello");
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_frame(), hello, "client {i}");
    }
    let binary = [0u8, 0xff, 0x80, 0x7f];
    clients[1]
        .send_all(&[
            OutFrame::binary(&binary[..2]).fin(false),
            OutFrame::continuation(&binary[2..]),
        ])
        .expect("send");
    let whole = frame(opcode::BINARY, &binary);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_frame(), whole, "client {i}");
    }
    let burst: Vec<OutFrame> = ["a", "b", "c"].iter().map(|t| OutFrame::text(*t)).collect();
    clients[2].send_all(&burst).expect("send");
    for (i, c) in clients.iter_mut().enumerate() {
        for t in ["a", "b", "c"] {
            assert_eq!(
                c.read_frame(),
                frame(opcode::TEXT, t.as_bytes()),
                "client {i}"
            );
        }
    }

    // A 300-byte message takes the 16-bit length form.
    let long = vec![b'x'; 300];
    clients[0]
        .send(&OutFrame::text(long.clone()))
        .expect("send");
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_frame(), frame(opcode::TEXT, &long), "client {i}");
    }

    // The second client leaves; the others still hear each other, and nothing else arrives.
    let mut leaving = clients.remove(1);
    leaving
        .send(&OutFrame::close(1000, ""))
        .expect("send close");
    assert_eq!(leaving.read_close(), Some(1000));
    clients[1].send(&OutFrame::binary("bye")).expect("send");
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_frame(), frame(opcode::BINARY, b"bye"), "client {i}");
    }
    for c in &mut clients {
        c.expect_silence(std::time::Duration::from_millis(200));
    }
}
