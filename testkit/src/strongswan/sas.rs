//! The SAs charon reports, parsed from `swanctl --list-sas --raw`.
//!
//! The raw form prints each vici message on one line: `key=value`, `key=[item item]`,
//! `key {…}`. Values are not quoted, so identities containing spaces cannot be told apart
//! from the next key: the harness uses identities without spaces.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

/// One IKE SA as charon lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IkeSa {
    /// The connection name.
    pub name: String,
    /// `ESTABLISHED`, `CONNECTING`, `REKEYING`, …
    pub state: String,
    pub local_host: String,
    pub remote_host: String,
    pub local_id: String,
    pub remote_id: String,
    pub initiator: bool,
    pub initiator_spi: String,
    pub responder_spi: String,
    pub children: Vec<ChildSa>,
    /// Every scalar field, for checks the named fields do not cover.
    pub fields: BTreeMap<String, String>,
}

/// One child SA as charon lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildSa {
    /// The child config name (the list key is `<name>-<uniqueid>`).
    pub name: String,
    /// `INSTALLED`, `REKEYED`, …
    pub state: String,
    /// `TRANSPORT` or `TUNNEL`.
    pub mode: String,
    /// `ESP` or `AH`.
    pub protocol: String,
    pub spi_in: String,
    pub spi_out: String,
    /// Selectors as charon prints them, e.g. `192.0.2.1/32[ipencap]`.
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug)]
enum Value {
    Scalar(String),
    List(Vec<String>),
    Section(Vec<(String, Value)>),
}

/// Parses the whole output of `swanctl --list-sas --raw`.
pub fn parse_list_sas(raw: &str) -> Result<Vec<IkeSa>> {
    let mut sas = Vec::new();
    for line in raw.lines() {
        let Some(body) = line.strip_prefix("list-sa event ") else {
            continue;
        };
        let mut parser = Parser {
            chars: body.chars().collect(),
            at: 0,
        };
        for (name, value) in parser.section()? {
            let Value::Section(entries) = value else {
                bail!("IKE SA {name} is not a section: {line}");
            };
            sas.push(ike_sa(name, entries)?);
        }
    }
    Ok(sas)
}

fn ike_sa(name: String, entries: Vec<(String, Value)>) -> Result<IkeSa> {
    let mut sa = IkeSa {
        name,
        ..IkeSa::default()
    };
    for (key, value) in entries {
        match value {
            Value::Scalar(v) => {
                sa.fields.insert(key, v);
            }
            Value::Section(children) if key == "child-sas" => {
                for (_, child) in children {
                    let Value::Section(child) = child else {
                        bail!("child SA of {} is not a section", sa.name);
                    };
                    sa.children.push(child_sa(child));
                }
            }
            Value::List(_) | Value::Section(_) => {}
        }
    }
    let field = |k: &str| sa.fields.get(k).cloned().unwrap_or_default();
    sa.state = field("state");
    sa.local_host = field("local-host");
    sa.remote_host = field("remote-host");
    sa.local_id = field("local-id");
    sa.remote_id = field("remote-id");
    sa.initiator = field("initiator") == "yes";
    sa.initiator_spi = field("initiator-spi");
    sa.responder_spi = field("responder-spi");
    Ok(sa)
}

fn child_sa(entries: Vec<(String, Value)>) -> ChildSa {
    let mut sa = ChildSa::default();
    for (key, value) in entries {
        match (key.as_str(), value) {
            (_, Value::Scalar(v)) => {
                sa.fields.insert(key, v);
            }
            ("local-ts", Value::List(ts)) => sa.local_ts = ts,
            ("remote-ts", Value::List(ts)) => sa.remote_ts = ts,
            _ => {}
        }
    }
    let field = |k: &str| sa.fields.get(k).cloned().unwrap_or_default();
    sa.name = field("name");
    sa.state = field("state");
    sa.mode = field("mode");
    sa.protocol = field("protocol");
    sa.spi_in = field("spi-in");
    sa.spi_out = field("spi-out");
    sa
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<()> {
        self.skip_space();
        if self.peek() != Some(c) {
            bail!(
                "expected {c:?} at offset {} of the list-sas output",
                self.at
            );
        }
        self.at += 1;
        Ok(())
    }

    /// `{ entries }`
    fn section(&mut self) -> Result<Vec<(String, Value)>> {
        self.expect('{')?;
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Some('}') => {
                    self.at += 1;
                    return Ok(entries);
                }
                None => bail!("unterminated section in the list-sas output"),
                Some(_) => entries.push(self.entry()?),
            }
        }
    }

    fn entry(&mut self) -> Result<(String, Value)> {
        let key = self.word(|c| c == '=' || c == '{');
        if key.is_empty() {
            bail!("empty key at offset {}", self.at);
        }
        self.skip_space();
        match self.peek() {
            Some('{') => Ok((key, Value::Section(self.section()?))),
            Some('=') => {
                self.at += 1;
                if self.peek() == Some('[') {
                    self.at += 1;
                    Ok((key, Value::List(self.list()?)))
                } else {
                    Ok((key, Value::Scalar(self.word(|c| c == '}'))))
                }
            }
            _ => Err(anyhow!("key {key} has neither value nor section")),
        }
    }

    /// Items up to the `]` that closes the list; items may contain balanced brackets
    /// (`192.0.2.1/32[ipencap]`).
    fn list(&mut self) -> Result<Vec<String>> {
        let mut items = Vec::new();
        let mut item = String::new();
        let mut depth = 0usize;
        loop {
            let c = self.peek().ok_or_else(|| anyhow!("unterminated list"))?;
            self.at += 1;
            match c {
                ']' if depth == 0 => break,
                ']' => depth -= 1,
                '[' => depth += 1,
                c if c.is_whitespace() && depth == 0 => {
                    if !item.is_empty() {
                        items.push(std::mem::take(&mut item));
                    }
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        if !item.is_empty() {
            items.push(item);
        }
        Ok(items)
    }

    fn word(&mut self, stop: impl Fn(char) -> bool) -> String {
        let start = self.at;
        while self.peek().is_some_and(|c| !c.is_whitespace() && !stop(c)) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }
}
