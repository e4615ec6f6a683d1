//! What a namespace's kernel holds, as `ip -s xfrm state`, `ip xfrm policy` and `ip link`
//! print it: the checks of the tests that run on the kernel data plane (in the VM).

use anyhow::{Context, Result};

use iiptran_testkit::netns::Netns;

/// One SA of `ip -s xfrm state`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XfrmState {
    pub src: String,
    pub dst: String,
    /// `esp`, `ah`, …
    pub proto: String,
    /// As printed, e.g. `0xc0ffee01`.
    pub spi: String,
    pub reqid: u32,
    /// `transport` or `tunnel`.
    pub mode: String,
    /// The `sel` line without the keyword and the uid, e.g.
    /// `src 192.0.2.1/32 dst 192.0.2.2/32 proto ipencap`.
    pub selector: String,
    pub bytes: u64,
    pub packets: u64,
}

impl XfrmState {
    /// The SPI as a number (`swanctl` prints SPIs as plain hex).
    pub fn spi_value(&self) -> Result<u32> {
        let hex = self.spi.trim_start_matches("0x");
        u32::from_str_radix(hex, 16).with_context(|| format!("SPI {:?}", self.spi))
    }

    /// The SA from `src` to `dst`.
    pub fn between(&self, src: &str, dst: &str) -> bool {
        self.src == src && self.dst == dst
    }
}

/// One policy of `ip xfrm policy`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XfrmPolicy {
    /// The selector line, e.g. `src 192.0.2.1/32 dst 192.0.2.2/32 proto ipencap`.
    pub selector: String,
    /// `in`, `out` or `fwd`.
    pub dir: String,
    /// The template's `proto … mode …` words, e.g. `proto esp reqid 1 mode transport`.
    pub template: String,
}

/// The SAs of `ns`, with their counters.
pub fn states(ns: &Netns) -> Result<Vec<XfrmState>> {
    parse_states(&ns.ip(&["-s", "xfrm", "state"])?)
}

/// The policies of `ns` (the kernel's per-socket policies are not listed).
pub fn policies(ns: &Netns) -> Result<Vec<XfrmPolicy>> {
    Ok(parse_policies(&ns.ip(&["xfrm", "policy"])?))
}

/// The names of the links of `ns`.
pub fn links(ns: &Netns) -> Result<Vec<String>> {
    Ok(ns
        .ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_owned())
        })
        .collect())
}

/// Blocks of lines, each starting with an unindented line.
fn blocks(text: &str) -> Vec<Vec<&str>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match blocks.last_mut() {
            Some(block) if line.starts_with([' ', '\t']) => block.push(line.trim()),
            _ => blocks.push(vec![line.trim()]),
        }
    }
    blocks
}

/// The word after `key` in `line`, without the other base iproute2 6.x adds in
/// parentheses (`spi 0xceb47dbf(3467935167)`).
fn after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == key)?;
    words.next()?.split('(').next()
}

/// Parses `ip -s xfrm state`.
pub fn parse_states(text: &str) -> Result<Vec<XfrmState>> {
    let mut states = Vec::new();
    for block in blocks(text) {
        let mut state = XfrmState::default();
        let mut lines = block.iter();
        while let Some(line) = lines.next() {
            if line.starts_with("src ") && state.src.is_empty() {
                state.src = after(line, "src").unwrap_or_default().to_owned();
                state.dst = after(line, "dst").unwrap_or_default().to_owned();
            } else if line.starts_with("proto ") {
                state.proto = after(line, "proto").unwrap_or_default().to_owned();
                state.spi = after(line, "spi").unwrap_or_default().to_owned();
                state.mode = after(line, "mode").unwrap_or_default().to_owned();
                let reqid = after(line, "reqid").unwrap_or("0");
                state.reqid = reqid
                    .parse()
                    .with_context(|| format!("reqid in {line:?}"))?;
            } else if let Some(sel) = line.strip_prefix("sel ") {
                // iproute2 6.x ends the selector with the owner's `uid`, which says nothing
                // of the traffic.
                let sel = sel.split(" uid ").next().unwrap_or(sel);
                state.selector = sel.trim().to_owned();
            } else if *line == "lifetime current:" {
                // `252(bytes), 3(packets)`
                let counts = lines
                    .next()
                    .context("no counters after `lifetime current:`")?;
                let number = |unit: &str| -> Result<u64> {
                    let word = counts
                        .split(", ")
                        .find(|w| w.ends_with(unit))
                        .with_context(|| format!("no {unit} in {counts:?}"))?;
                    Ok(word.trim_end_matches(unit).parse()?)
                };
                state.bytes = number("(bytes)")?;
                state.packets = number("(packets)")?;
            }
        }
        states.push(state);
    }
    Ok(states)
}

/// Parses `ip xfrm policy`.
pub fn parse_policies(text: &str) -> Vec<XfrmPolicy> {
    blocks(text)
        .into_iter()
        .map(|block| {
            let mut policy = XfrmPolicy {
                selector: block.first().map(|l| l.to_string()).unwrap_or_default(),
                ..XfrmPolicy::default()
            };
            for line in block.iter().skip(1) {
                if line.starts_with("dir ") {
                    policy.dir = after(line, "dir").unwrap_or_default().to_owned();
                } else if line.starts_with("proto ") {
                    policy.template = (*line).to_owned();
                }
            }
            policy
        })
        .collect()
}

/// The outbound and inbound SA between `local` and `remote` when they are the only SAs of
/// `ns`; `None` while it holds any other number of SAs.
pub fn sa_pair(ns: &Netns, local: &str, remote: &str) -> Result<Option<(XfrmState, XfrmState)>> {
    let states = states(ns)?;
    let out = states.iter().find(|s| s.between(local, remote));
    let inbound = states.iter().find(|s| s.between(remote, local));
    Ok(match (states.len(), out, inbound) {
        (2, Some(out), Some(inbound)) => Some((out.clone(), inbound.clone())),
        _ => None,
    })
}

/// The selector `ip xfrm` prints for IPIP from `src` to `dst` (IPv4 endpoints).
pub fn ipip_selector(src: &str, dst: &str) -> String {
    format!("src {src}/32 dst {dst}/32 proto ipencap")
}
