//! The example programs (`examples/`) build, run, and do what their doc comments say, over
//! real sockets with the crate's own client.

mod common;

use common::Server;
use wsloop::client::{Client, Received};

#[test]
fn the_echo_example_sends_every_message_back() {
    let server = Server::example("echo");
    let mut client = Client::connect(&server.url("/")).expect("connect");
    client.send_text("héllo").expect("send");
    assert_eq!(client.recv().expect("echo"), Received::Text("héllo".into()));
    client.send_binary(&[0, 1, 254, 255]).expect("send");
    assert_eq!(
        client.recv().expect("echo"),
        Received::Binary(vec![0, 1, 254, 255])
    );
}

#[test]
fn the_chat_example_welcomes_and_broadcasts_to_everyone() {
    let server = Server::example("chat");
    let mut alice = Client::connect(&server.url("/")).expect("connect");
    let Received::Text(welcome) = alice.recv().expect("welcome") else {
        panic!("welcome is text");
    };
    let alice_id = welcome
        .strip_prefix("welcome, you are #")
        .expect("welcome names the member")
        .to_owned();
    let mut bob = Client::connect(&server.url("/")).expect("connect");
    assert!(matches!(bob.recv().expect("welcome"), Received::Text(_)));
    alice.send_text("hi all").expect("send");
    let line = Received::Text(format!("#{alice_id}: hi all"));
    assert_eq!(alice.recv().expect("own line"), line);
    assert_eq!(bob.recv().expect("broadcast"), line);
    // Binary is refused with 1003 (RFC 6455 §7.4.1: a type it cannot accept).
    bob.send_binary(b"raw").expect("send");
    assert_eq!(
        bob.recv().expect("close"),
        Received::Close(Some(1003), "text only".into())
    );
}
