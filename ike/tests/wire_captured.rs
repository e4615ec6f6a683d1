//! Messages of real-world shape built with the emitter and compared byte for byte with
//! hex written by hand from the RFC 7296 §3 layouts.

mod wire_common;

use iiptran_ike::iana::PayloadType;
use iiptran_ike::wire::{Message, emit_chain, parse_chain};
use wire_common::{auth_inner, sa_init_request};

fn unhex(spaced: &str) -> Vec<u8> {
    let compact: String = spaced.split_whitespace().collect();
    hex::decode(compact).unwrap()
}

#[test]
fn sa_init_request_matches_rfc_layout() {
    let nonce: String = (0x40..0x60).map(|b: u8| format!("{b:02x}")).collect();
    let ke: String = (1..=32).map(|b: u8| format!("{b:02x}")).collect();
    let expected = unhex(&format!(
        "
        0011223344556677 0000000000000000 21 20 22 08 00000000 0000010c
        22 00 0054
          02 00 002c 01 01 00 04
            03 00 000c 01 00 000c 800e0100
            03 00 0008 03 00 000c
            03 00 0008 02 00 0005
            00 00 0008 04 00 001f
          00 00 0024 02 01 00 03
            03 00 000c 01 00 0014 800e0100
            03 00 0008 02 00 0005
            00 00 0008 04 00 001f
        28 00 0028 001f 0000 {ke}
        29 00 0024 {nonce}
        29 00 001c 00 00 4004 {nat_src}
        29 00 001c 00 00 4005 {nat_dst}
        29 00 0008 00 00 402e
        00 00 0010 00 00 402f 0002 0003 0004 0005
        ",
        nat_src = "a1".repeat(20),
        nat_dst = "b2".repeat(20),
    ));
    let message = sa_init_request();
    let emitted = message.emit().unwrap();
    assert_eq!(hex::encode(&emitted), hex::encode(&expected));
    assert_eq!(Message::parse(&expected).unwrap(), message);
}

#[test]
fn ike_auth_inner_chain_matches_rfc_layout() {
    let expected = unhex(
        "
        27 00 0011 02 000000 612e6578616d706c65
        21 00 0010 0e 000000 aaaaaaaaaaaaaaaa
        2c 00 0024
          00 00 0020 01 03 04 02 c0ffee01
            03 00 000c 01 00 0014 800e0100
            00 00 0008 05 00 0000
        2d 00 0018 01 000000 07 04 0010 0000 ffff c0000201 c0000201
        00 00 0018 01 000000 07 04 0010 0000 ffff c0000202 c0000202
        ",
    );
    let mut emitted = Vec::new();
    emit_chain(&auth_inner(), &mut emitted).unwrap();
    assert_eq!(hex::encode(&emitted), hex::encode(&expected));
    assert_eq!(
        parse_chain(PayloadType::IDI, &expected).unwrap(),
        auth_inner()
    );
}
