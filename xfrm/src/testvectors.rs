//! Loader for the ESP known-answer files in `testdata/` (test builds only).

/// One ESP known-answer case.
pub struct EspVector {
    pub name: String,
    pub chacha: bool,
    pub key: Vec<u8>,
    pub salt: Vec<u8>,
    pub spi: u32,
    pub seq: u64,
    pub esn: bool,
    pub plaintext: Vec<u8>,
    pub packet: Vec<u8>,
}

/// Parses `testdata/<file>`: blank-line separated blocks of `field: hex` lines, where
/// indented lines continue the previous field and `#` starts a comment line.
pub fn load(file: &str) -> Vec<EspVector> {
    let path = format!("{}/testdata/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in block
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            if line.starts_with(char::is_whitespace) {
                fields
                    .last_mut()
                    .expect("continuation without a field")
                    .1
                    .push_str(line.trim());
            } else {
                let (k, v) = line.split_once(':').expect("field: value");
                fields.push((k.to_string(), v.trim().to_string()));
            }
        }
        if fields.is_empty() {
            continue;
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|f| f.0 == k)
                .map(|f| f.1.clone())
                .unwrap_or_default()
        };
        let hex =
            |k: &str| hex::decode(get(k).replace(' ', "")).unwrap_or_else(|e| panic!("{k}: {e}"));
        let seq = hex("seq");
        out.push(EspVector {
            name: get("name"),
            chacha: get("alg") == "chacha20-poly1305",
            key: hex("key"),
            salt: hex("salt"),
            spi: u32::from_be_bytes(hex("spi").try_into().expect("4-octet SPI")),
            seq: seq.iter().fold(0u64, |a, b| a << 8 | u64::from(*b)),
            esn: seq.len() == 8,
            plaintext: hex("plaintext"),
            packet: hex("packet"),
        });
    }
    out
}
