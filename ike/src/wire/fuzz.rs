//! Entry points for fuzzers and the corpus replay test. They panic on purpose when a
//! property of the wire format does not hold; the parsers themselves never panic.

use super::message::{Datagram, Message};
use super::payload::{Payload, emit_chain, parse_chain};
use crate::iana::PayloadType;

/// Parses `data` as a datagram; what parses must re-emit to a message that parses back
/// equal. The encrypted body and the bytes after the first are also tried as payload
/// chains.
pub fn ike_message(data: &[u8]) {
    if let Some((&first, rest)) = data.split_first() {
        chain_round_trip(PayloadType(first), rest);
    }
    let Ok(parsed) = Datagram::parse(data) else {
        return;
    };
    let emitted = parsed.message.emit().expect("a parsed message re-emits");
    let reparsed = Message::parse(&emitted).expect("a re-emitted message parses");
    assert_eq!(reparsed, parsed.message);
    if let Some(protected) = parsed.protected {
        assert_eq!(protected.aad.len() + protected.body.len(), data.len());
        chain_round_trip(protected.first, protected.body);
    }
}

fn chain_round_trip(first: PayloadType, bytes: &[u8]) {
    let Ok(chain) = parse_chain(first, bytes) else {
        return;
    };
    let mut emitted = Vec::new();
    emit_chain(&chain, &mut emitted).expect("a parsed chain re-emits");
    let first = chain.first().map_or(PayloadType::NONE, Payload::kind);
    let reparsed = parse_chain(first, &emitted).expect("a re-emitted chain parses");
    assert_eq!(reparsed, chain);
}
