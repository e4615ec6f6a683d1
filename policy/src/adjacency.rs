//! The life of one VN adjacency as a pure state machine: events (with the current time)
//! go in, commands for the daemon come out. Nothing here performs I/O or reads a clock.
//!
//! ```text
//! Configured ──Start──▶ Connecting ──SAs installed + link up──▶ Up ⇄ Rekeying
//!      ▲                   ▲    │                               │
//!  Terminate               │    └──failure──▶ Down(back-off) ◀──┘ SA loss
//!      │                   └───────────timer─────────┘
//!  any state ──Remove, Shutdown──▶ Removed (terminal)
//! ```
//!
//! `Up` means both child SAs of the current pair are installed *and* the virtual link is
//! up. Losing the SAs takes the link down in the same step, so the routing protocol
//! withdraws its routes at once. A rekey or the replacement of a redundant pair never
//! takes the link down: the new pair is installed before the old one is deleted.
//!
//! A passive adjacency never initiates: after a failure it waits in `Connecting` (with no
//! timer) for the peer to come back.
//!
//! The daemon keeps at most one timer per adjacency: each [`Command::ArmTimer`] replaces
//! the previous one, and a [`Event::Timer`] before the armed time is ignored.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Wall-clock time in milliseconds since the Unix epoch, as fed in by the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    pub fn plus(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    pub fn since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// One child SA pair (inbound and outbound SPI) and the IKE SA it belongs to, named by
/// our IKE SPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChildPair {
    pub ike_sa: u64,
    pub spi_in: u32,
    pub spi_out: u32,
}

/// Where an adjacency is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Not started, or stopped by the operator.
    Configured,
    /// Waiting for an IKE SA and its child SA pair (initiated by us or, when passive, by
    /// the peer), then for the SAs to be installed and the link to come up.
    Connecting,
    Up,
    /// Up, while a replacement pair is installed.
    Rekeying,
    /// Failed; the next attempt is at `retry_at`.
    Down {
        retry_at: Time,
    },
    Removed,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The adjacency was configured (daemon start or reload).
    Start,
    /// An IKE SA with the neighbor is up: a new attempt, whose going is its own failure.
    IkeSaUp,
    /// A child SA pair was negotiated. The newest pair replaces the one in use: the
    /// daemon passes on no pair of an IKE SA that the IKE engine found redundant
    /// (crossing initiations), so both nodes end with the same pair.
    ChildSaEstablished(ChildPair),
    /// The peer refused the child SA of an initiation (or we refused the peer's).
    ChildSaFailed {
        reason: String,
    },
    /// The IKE SA of our initiation went before it was up: refused, unanswered, or
    /// failed on our side.
    AttemptFailed {
        reason: String,
    },
    /// Both SAs of the pair are in the data plane.
    ChildSaInstalled(ChildPair),
    /// The data plane refused the pair.
    InstallFailed {
        pair: ChildPair,
        reason: String,
    },
    LinkUp,
    /// A rekey of the current pair began.
    RekeyStarted,
    ChildSaRekeyed {
        old: ChildPair,
        new: ChildPair,
    },
    ChildSaDeleted(ChildPair),
    HardExpire(ChildPair),
    LivenessFailed,
    RekeyFailed,
    /// The virtual link went down or vanished outside the daemon's control.
    LinkLost,
    AuthFailed {
        reason: String,
    },
    /// The peer deleted an IKE SA (and so all its child SAs).
    PeerDeleted {
        ike_sa: u64,
    },
    /// The peer restarted: it set up a new IKE SA saying it holds no other, so this one
    /// and its pairs are gone on its side, and the new IKE SA's pair follows at once.
    PeerRestarted {
        ike_sa: u64,
    },
    Timer,
    Remove,
    /// The daemon is stopping: as `Remove`, with a cause of its own in the history.
    Shutdown,
    /// Operator: take the adjacency down and keep it down.
    Terminate,
    /// Operator: connect now.
    Initiate,
    /// Traffic for the neighbor found no SA (the data plane's acquire): an adjacency
    /// waiting out its back-off connects now; any other carries on as it is.
    Traffic,
}

/// What the daemon must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateLink,
    DeleteLink,
    SetLinkUp,
    SetLinkDown,
    /// Start an IKE SA with its first child SA towards the neighbor.
    Initiate,
    InstallSas(ChildPair),
    /// Remove the pair from the data plane (if installed) and delete it with the peer;
    /// an IKE SA left without child SAs may be closed too.
    DeleteSas(ChildPair),
    ArmTimer(Time),
    Log(String),
}

/// Back-off and timeout parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// Up this long, a failure starts the back-off from `backoff_first` again.
    pub stable_after: Duration,
    /// An initiation that has not brought the adjacency up by then has failed.
    pub connect_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            stable_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// A state change, kept for the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Time,
    pub from: State,
    pub to: State,
    pub cause: String,
}

/// What `iiptranctl list-neighbors` and `iiptranctl history` show of an adjacency's past.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub last_established: Option<Time>,
    pub last_error: Option<(Time, String)>,
    /// The most recent transitions, oldest first.
    pub transitions: VecDeque<Transition>,
}

const HISTORY_LEN: usize = 32;

/// The persistent view of an adjacency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjacencyRecord {
    pub neighbor: String,
    pub state: State,
    pub current: Option<ChildPair>,
    pub history: History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Down,
    /// SetLinkUp sent, LinkUp not yet seen.
    Requested,
    Up,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Installed {
    pair: ChildPair,
    installed: bool,
    /// A rekey made this pair: the IKE engine deletes the pair it replaces and reports
    /// when that one is gone, so that one's inbound SA keeps taking what the peer sent on
    /// it until then.
    rekeyed: bool,
}

/// One adjacency.
#[derive(Clone, Debug)]
pub struct Adjacency {
    neighbor: String,
    passive: bool,
    timing: Timing,
    state: State,
    link_created: bool,
    link: LinkState,
    current: Option<Installed>,
    /// A pair installed to replace `current` (rekey or crossing initiation).
    next: Option<Installed>,
    timer: Option<Time>,
    up_since: Option<Time>,
    /// Failures since the adjacency was last stable.
    failures: u32,
    /// The connecting attempt failed for a refused child SA: its childless IKE SA going
    /// next is the consequence, and the refusal stays the error to show.
    refused: bool,
    rng: u64,
    history: History,
    /// Counts changes of what [`Adjacency::record`] shows.
    revision: u64,
}

impl Adjacency {
    /// `seed` drives the back-off jitter; give each adjacency a different one.
    pub fn new(neighbor: &str, passive: bool, timing: Timing, seed: u64) -> Self {
        Self {
            neighbor: neighbor.to_owned(),
            passive,
            timing,
            state: State::Configured,
            link_created: false,
            link: LinkState::Down,
            current: None,
            next: None,
            timer: None,
            up_since: None,
            failures: 0,
            refused: false,
            rng: seed,
            history: History::default(),
            revision: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Takes over the history of this neighbor's record from an earlier run of the
    /// daemon, so that its past (last established, last error, transitions) outlives a
    /// restart; the adjacency itself starts afresh.
    pub fn restore(&mut self, mut history: History) {
        while history.transitions.len() > HISTORY_LEN {
            history.transitions.pop_front();
        }
        self.history = history;
        self.revision += 1;
    }

    /// The pair carrying traffic (or being installed to).
    pub fn current(&self) -> Option<ChildPair> {
        self.current.map(|c| c.pair)
    }

    /// Whether the link is up (the daemon confirmed it).
    pub fn link_up(&self) -> bool {
        self.link == LinkState::Up
    }

    /// Changes whenever [`Adjacency::record`] would: a cheap test of whether to store it.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn record(&self) -> AdjacencyRecord {
        AdjacencyRecord {
            neighbor: self.neighbor.clone(),
            state: self.state,
            current: self.current(),
            history: self.history.clone(),
        }
    }

    /// Feeds one event in and returns the commands it calls for.
    pub fn handle(&mut self, now: Time, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        if self.state == State::Removed {
            // Terminal: anything the peer still sets up is torn down again.
            if let Event::ChildSaEstablished(p) = event {
                out.push(Command::DeleteSas(p));
            }
            return out;
        }
        match event {
            Event::Start => self.start(now, &mut out),
            Event::Initiate => match self.state {
                State::Configured => self.start(now, &mut out),
                State::Down { .. } => self.connect(now, "operator initiate", &mut out),
                _ => out.push(Command::Log("already connecting or up".into())),
            },
            Event::Traffic => {
                if let State::Down { .. } = self.state {
                    self.connect(now, "traffic waits for SAs", &mut out);
                }
            }
            Event::IkeSaUp => self.refused = false,
            Event::ChildSaEstablished(p) => self.established(now, p, &mut out),
            Event::ChildSaInstalled(p) => self.installed(now, p, &mut out),
            Event::InstallFailed { pair, reason } => {
                // A pair that is not in the data plane is of no use, and a passive
                // adjacency would wait for ever with a peer that believes it is up:
                // failing deletes it with the peer, which starts afresh.
                if [self.current, self.next]
                    .into_iter()
                    .flatten()
                    .any(|k| k.pair == pair)
                {
                    self.fail(
                        now,
                        &format!("cannot install the child SAs: {reason}"),
                        &mut out,
                    );
                }
            }
            Event::LinkUp => self.link_came_up(now, &mut out),
            Event::RekeyStarted => {
                if self.state == State::Up {
                    self.go(now, State::Rekeying, "rekey started");
                }
            }
            Event::ChildSaRekeyed { old, new } => self.rekeyed(now, old, new, &mut out),
            Event::ChildSaDeleted(p) | Event::HardExpire(p) => self.pair_gone(now, p, &mut out),
            Event::PeerDeleted { ike_sa } => self.ike_gone(now, ike_sa, &mut out),
            Event::PeerRestarted { ike_sa } => self.peer_restarted(now, ike_sa, &mut out),
            Event::LivenessFailed => self.fail(now, "liveness check failed", &mut out),
            Event::RekeyFailed => self.fail(now, "rekey failed", &mut out),
            Event::ChildSaFailed { reason } => {
                if matches!(self.state, State::Connecting | State::Rekeying)
                    && self.current.is_none()
                {
                    self.fail(now, &reason, &mut out);
                    self.refused = true;
                } else {
                    out.push(Command::Log(reason));
                }
            }
            // A pair already in hand (the peer's crossing initiation) is not the attempt's.
            Event::AttemptFailed { reason } => {
                if self.state == State::Connecting && self.current.is_none() {
                    self.fail(now, &reason, &mut out);
                } else {
                    out.push(Command::Log(reason));
                }
            }
            Event::LinkLost => self.link_lost(now, &mut out),
            Event::AuthFailed { reason } => {
                self.fail(now, &format!("authentication failed: {reason}"), &mut out);
            }
            Event::Timer => self.timer(now, &mut out),
            Event::Terminate => {
                self.tear_down(&mut out);
                self.go(now, State::Configured, "terminated by operator");
            }
            Event::Remove => self.remove(now, "removed from configuration", &mut out),
            Event::Shutdown => self.remove(now, "daemon stopped", &mut out),
        }
        out
    }

    fn remove(&mut self, now: Time, cause: &str, out: &mut Vec<Command>) {
        self.tear_down(out);
        if self.link_created {
            out.push(Command::DeleteLink);
            self.link_created = false;
        }
        self.go(now, State::Removed, cause);
    }

    fn start(&mut self, now: Time, out: &mut Vec<Command>) {
        if self.state != State::Configured {
            return;
        }
        if !self.link_created {
            out.push(Command::CreateLink);
            self.link_created = true;
        }
        self.connect(now, "started", out);
    }

    /// Enters `Connecting`: initiates unless passive.
    fn connect(&mut self, now: Time, cause: &str, out: &mut Vec<Command>) {
        self.go(now, State::Connecting, cause);
        if self.passive {
            self.timer = None;
            return;
        }
        out.push(Command::Initiate);
        self.arm(now.plus(self.timing.connect_timeout), out);
    }

    fn arm(&mut self, at: Time, out: &mut Vec<Command>) {
        self.timer = Some(at);
        out.push(Command::ArmTimer(at));
    }

    fn go(&mut self, now: Time, to: State, cause: &str) {
        if self.state == to {
            return;
        }
        if self.history.transitions.len() == HISTORY_LEN {
            self.history.transitions.pop_front();
        }
        self.history.transitions.push_back(Transition {
            at: now,
            from: self.state,
            to,
            cause: cause.to_owned(),
        });
        self.state = to;
        self.revision += 1;
    }

    fn established(&mut self, now: Time, p: ChildPair, out: &mut Vec<Command>) {
        match self.state {
            State::Configured => {
                out.push(Command::Log(
                    "refusing a child SA: adjacency stopped".into(),
                ));
                out.push(Command::DeleteSas(p));
                return;
            }
            State::Down { .. } => {
                self.go(now, State::Connecting, "peer initiated");
                self.timer = None;
                if !self.passive {
                    self.arm(now.plus(self.timing.connect_timeout), out);
                }
            }
            _ => {}
        }
        if [self.current, self.next]
            .into_iter()
            .flatten()
            .any(|k| k.pair == p)
        {
            return;
        }
        if self.current.is_none() {
            self.current = Some(Installed {
                pair: p,
                installed: false,
                rekeyed: false,
            });
            self.revision += 1;
            out.push(Command::InstallSas(p));
            return;
        }
        // A second pair: the surviving IKE SA of crossing initiations, or a peer that
        // re-initiated. It replaces the one in use.
        if let Some(n) = self.next {
            out.push(Command::DeleteSas(n.pair));
        }
        self.replace_with(now, p, false, "child SA pair replaced by a newer one", out);
    }

    /// Makes `p` the next pair: installed first, the current one deleted once it is in.
    fn replace_with(
        &mut self,
        now: Time,
        p: ChildPair,
        rekeyed: bool,
        cause: &str,
        out: &mut Vec<Command>,
    ) {
        self.next = Some(Installed {
            pair: p,
            installed: false,
            rekeyed,
        });
        out.push(Command::InstallSas(p));
        if self.state == State::Up {
            self.go(now, State::Rekeying, cause);
        }
    }

    fn installed(&mut self, now: Time, p: ChildPair, out: &mut Vec<Command>) {
        if let Some(next) = self.next.filter(|n| n.pair == p) {
            if let Some(old) = self.current.take()
                && !next.rekeyed
            {
                out.push(Command::DeleteSas(old.pair));
            }
            self.current = self.next.take();
            self.revision += 1;
        } else if !self.current.is_some_and(|c| c.pair == p) {
            return;
        }
        if let Some(c) = self.current.as_mut() {
            c.installed = true;
        }
        if self.state == State::Rekeying {
            self.settle(now, "child SAs replaced");
        } else {
            self.bring_link_up(now, out);
        }
    }

    fn bring_link_up(&mut self, now: Time, out: &mut Vec<Command>) {
        match self.link {
            LinkState::Down => {
                out.push(Command::SetLinkUp);
                self.link = LinkState::Requested;
            }
            LinkState::Requested => {}
            LinkState::Up => self.now_up(now),
        }
    }

    fn link_came_up(&mut self, now: Time, out: &mut Vec<Command>) {
        let installed = self.current.is_some_and(|c| c.installed);
        match (self.link, installed) {
            (LinkState::Requested, true) => {
                self.link = LinkState::Up;
                self.now_up(now);
            }
            (LinkState::Up, _) => {}
            _ => {
                // Up without installed SAs would route VN traffic into nothing.
                out.push(Command::SetLinkDown);
                self.link = LinkState::Down;
            }
        }
    }

    fn now_up(&mut self, now: Time) {
        if self.state != State::Connecting {
            return;
        }
        self.timer = None;
        self.up_since = Some(now);
        self.history.last_established = Some(now);
        self.revision += 1;
        self.go(now, State::Up, "child SAs installed and link up");
    }

    fn rekeyed(&mut self, now: Time, old: ChildPair, new: ChildPair, out: &mut Vec<Command>) {
        if self.current.is_some_and(|c| c.pair == old) {
            if let Some(n) = self.next {
                out.push(Command::DeleteSas(n.pair));
            }
            self.replace_with(now, new, true, "child SAs rekeyed", out);
        } else if self.next.is_some_and(|n| n.pair == old) {
            out.push(Command::DeleteSas(old));
            self.replace_with(now, new, true, "child SAs rekeyed", out);
        } else {
            out.push(Command::Log("rekey of a pair not in use".into()));
            out.push(Command::DeleteSas(new));
        }
    }

    fn pair_gone(&mut self, now: Time, p: ChildPair, out: &mut Vec<Command>) {
        if self.current.is_some_and(|c| c.pair == p) {
            // During a rekey the old pair may go before the new one is in: carry on with
            // the new one.
            self.current = self.next.take();
            self.revision += 1;
            match self.current {
                None => self.fail(now, "child SAs deleted or expired", out),
                Some(c) if !c.installed && self.state == State::Up => {
                    self.go(now, State::Rekeying, "replacement child SAs taking over");
                }
                Some(_) => {}
            }
        } else if self.next.is_some_and(|n| n.pair == p) {
            self.next = None;
            self.abandon_replacement(now);
        }
    }

    fn ike_gone(&mut self, now: Time, ike_sa: u64, out: &mut Vec<Command>) {
        if self.next.is_some_and(|n| n.pair.ike_sa == ike_sa) {
            self.next = None;
            self.abandon_replacement(now);
        }
        if let Some(c) = self.current.filter(|c| c.pair.ike_sa == ike_sa) {
            if self.next.is_some() {
                // A pair of another IKE SA is taking over (a duplicate IKE SA kept after
                // all): carry on with it, as when the pair alone goes.
                self.pair_gone(now, c.pair, out);
            } else {
                self.current = None;
                self.revision += 1;
                self.fail(now, "peer deleted the IKE SA", out);
            }
        } else if matches!(self.state, State::Connecting | State::Rekeying)
            && self.current.is_none()
        {
            if std::mem::take(&mut self.refused) {
                return;
            }
            self.fail(now, "peer deleted the IKE SA", out);
        }
    }

    /// A restarted peer's new IKE SA is up and its pair is being negotiated with it: the
    /// old pair goes, and while the new one comes the link stays up, so the routing
    /// protocol sees no flap for what is a replacement. Were the link set down, OSPF
    /// would drop the adjacency and reconverge twice for one peer restart.
    fn peer_restarted(&mut self, now: Time, ike_sa: u64, out: &mut Vec<Command>) {
        if !matches!(self.state, State::Up | State::Rekeying)
            || self.current.is_none_or(|c| c.pair.ike_sa != ike_sa)
        {
            return self.ike_gone(now, ike_sa, out);
        }
        for p in [self.current.take(), self.next.take()]
            .into_iter()
            .flatten()
        {
            if p.pair.ike_sa == ike_sa {
                out.push(Command::DeleteSas(p.pair));
            } else {
                self.current = Some(p);
            }
        }
        self.revision += 1;
        self.go(now, State::Rekeying, "peer restarted: new child SAs coming");
        if self.current.is_none() {
            self.arm(now.plus(self.timing.connect_timeout), out);
        }
    }

    /// The replacement pair went away; the current one still carries traffic.
    fn abandon_replacement(&mut self, now: Time) {
        if self.state == State::Rekeying {
            self.settle(now, "replacement child SAs gone");
        }
    }

    /// Rekeying ends when no replacement is pending and the current pair is installed.
    fn settle(&mut self, now: Time, cause: &str) {
        if self.next.is_none() && self.current.is_some_and(|c| c.installed) {
            self.timer = None;
            self.go(now, State::Up, cause);
        }
    }

    fn timer(&mut self, now: Time, out: &mut Vec<Command>) {
        match self.timer {
            Some(at) if at <= now => self.timer = None,
            _ => return,
        }
        match self.state {
            State::Down { .. } => self.connect(now, "retrying", out),
            State::Connecting => self.fail(now, "no SAs within the connect timeout", out),
            State::Rekeying if self.current.is_none() => {
                self.fail(now, "restarted peer brought no child SAs", out);
            }
            _ => {}
        }
    }

    /// The link is gone or down behind our back: what it carried fails, and it is made
    /// afresh for the next attempt.
    fn link_lost(&mut self, now: Time, out: &mut Vec<Command>) {
        if !self.link_created {
            return;
        }
        self.link = LinkState::Down;
        self.fail(now, "virtual link lost", out);
        out.push(Command::DeleteLink);
        out.push(Command::CreateLink);
    }

    /// Takes everything down that carries traffic: link first, so routes go at once.
    fn tear_down(&mut self, out: &mut Vec<Command>) {
        if self.link != LinkState::Down {
            out.push(Command::SetLinkDown);
            self.link = LinkState::Down;
        }
        for p in [self.current.take(), self.next.take()]
            .into_iter()
            .flatten()
        {
            out.push(Command::DeleteSas(p.pair));
        }
        self.revision += 1;
        self.timer = None;
    }

    fn fail(&mut self, now: Time, why: &str, out: &mut Vec<Command>) {
        if !matches!(self.state, State::Connecting | State::Up | State::Rekeying) {
            return;
        }
        self.tear_down(out);
        self.history.last_error = Some((now, why.to_owned()));
        self.revision += 1;
        out.push(Command::Log(why.to_owned()));
        if self
            .up_since
            .take()
            .is_some_and(|since| now.since(since) >= self.timing.stable_after)
        {
            self.failures = 0;
        }
        if self.passive {
            self.go(now, State::Connecting, why);
            return;
        }
        let retry_at = now.plus(self.next_backoff());
        self.go(now, State::Down { retry_at }, why);
        self.arm(retry_at, out);
    }

    /// The nominal delay doubles from `backoff_first` up to `backoff_max`; the delay used
    /// is drawn uniformly from its upper half, so that nodes that failed together do not
    /// retry together.
    fn next_backoff(&mut self) -> Duration {
        let nominal = self
            .timing
            .backoff_first
            .saturating_mul(1u32 << self.failures.min(30))
            .min(self.timing.backoff_max);
        self.failures = self.failures.saturating_add(1);
        let half = u64::try_from(nominal.as_millis() / 2).unwrap_or(u64::MAX);
        let jitter = if half == 0 {
            0
        } else {
            self.random() % (half + 1)
        };
        Duration::from_millis(half.saturating_add(jitter))
    }

    /// splitmix64: small, seedable, good enough for jitter.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
