use super::*;
use proptest::prelude::*;

fn adjacency(passive: bool) -> Adjacency {
    Adjacency::new("b", passive, Timing::default(), 7)
}

fn pair(ike_sa: u64, spi_in: u32, spi_out: u32) -> ChildPair {
    ChildPair {
        ike_sa,
        spi_in,
        spi_out,
    }
}

const P1: ChildPair = ChildPair {
    ike_sa: 1,
    spi_in: 0x100,
    spi_out: 0x200,
};
const P2: ChildPair = ChildPair {
    ike_sa: 1,
    spi_in: 0x300,
    spi_out: 0x400,
};

fn t(secs: u64) -> Time {
    Time(secs * 1000)
}

/// Brings a fresh adjacency up with P1 at time 0.
fn up() -> Adjacency {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(0), Event::ChildSaEstablished(P1));
    a.handle(t(0), Event::ChildSaInstalled(P1));
    a.handle(t(0), Event::LinkUp);
    assert_eq!(a.state(), State::Up);
    a
}

fn retry_at(a: &Adjacency) -> Time {
    match a.state() {
        State::Down { retry_at } => retry_at,
        other => panic!("expected Down, got {other:?}"),
    }
}

#[test]
fn start_creates_link_and_initiates() {
    let mut a = adjacency(false);
    let out = a.handle(t(5), Event::Start);
    assert_eq!(
        out,
        [
            Command::CreateLink,
            Command::Initiate,
            Command::ArmTimer(t(35))
        ]
    );
    assert_eq!(a.state(), State::Connecting);
    assert_eq!(a.history().transitions.len(), 1);
    assert_eq!(a.history().transitions[0].from, State::Configured);
}

#[test]
fn up_needs_both_sas_installed_and_the_link() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    assert!(a.handle(t(1), Event::IkeSaUp).is_empty());
    assert_eq!(
        a.handle(t(1), Event::ChildSaEstablished(P1)),
        [Command::InstallSas(P1)]
    );
    assert_eq!(a.state(), State::Connecting);
    assert_eq!(
        a.handle(t(1), Event::LinkUp),
        [Command::SetLinkDown],
        "a link up without SAs is taken down again"
    );
    assert_eq!(
        a.handle(t(2), Event::ChildSaInstalled(P1)),
        [Command::SetLinkUp]
    );
    assert_eq!(a.state(), State::Connecting);
    assert!(a.handle(t(2), Event::LinkUp).is_empty());
    assert_eq!(a.state(), State::Up);
    assert!(a.link_up());
    assert_eq!(a.history().last_established, Some(t(2)));
    assert_eq!(a.current(), Some(P1));
    // The connect timer armed at Start is now stale.
    assert!(a.handle(t(30), Event::Timer).is_empty());
    assert_eq!(a.state(), State::Up);
}

#[test]
fn rekey_never_takes_the_link_down() {
    let mut a = up();
    assert!(a.handle(t(10), Event::RekeyStarted).is_empty());
    assert_eq!(a.state(), State::Rekeying);
    let out = a.handle(t(11), Event::ChildSaRekeyed { old: P1, new: P2 });
    assert_eq!(out, [Command::InstallSas(P2)]);
    assert_eq!(a.state(), State::Rekeying);
    // The old pair stays until the IKE engine, which deletes it with the peer, reports
    // it gone: its inbound SA still takes what the peer sent on it.
    let out = a.handle(t(11), Event::ChildSaInstalled(P2));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(P2));
    // The engine's report that the old pair is gone changes nothing.
    assert!(a.handle(t(12), Event::ChildSaDeleted(P1)).is_empty());
    assert_eq!(a.state(), State::Up);
    assert!(a.link_up());
}

#[test]
fn rekey_without_rekey_started_and_old_deleted_first() {
    let mut a = up();
    a.handle(t(10), Event::ChildSaRekeyed { old: P1, new: P2 });
    assert_eq!(a.state(), State::Rekeying);
    let out = a.handle(t(10), Event::ChildSaDeleted(P1));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.handle(t(10), Event::ChildSaInstalled(P2)), []);
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(P2));
}

#[test]
fn replacement_pair_lost_during_rekey_keeps_the_old_one() {
    let mut a = up();
    a.handle(t(10), Event::ChildSaRekeyed { old: P1, new: P2 });
    assert!(a.handle(t(10), Event::HardExpire(P2)).is_empty());
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(P1));
}

#[test]
fn every_loss_event_takes_the_link_down_at_once() {
    let losses = [
        Event::ChildSaDeleted(P1),
        Event::HardExpire(P1),
        Event::LivenessFailed,
        Event::RekeyFailed,
        Event::AuthFailed {
            reason: "bad".into(),
        },
        Event::PeerDeleted { ike_sa: 1 },
    ];
    for loss in losses {
        let mut a = up();
        let out = a.handle(t(3), loss.clone());
        assert_eq!(
            out.first(),
            Some(&Command::SetLinkDown),
            "{loss:?}: {out:?}"
        );
        let at = retry_at(&a);
        assert!(out.contains(&Command::ArmTimer(at)), "{loss:?}");
        assert!(!a.link_up());
        assert!(a.history().last_error.is_some());
        // Retry at the timer.
        let out = a.handle(at, Event::Timer);
        assert_eq!(out[0], Command::Initiate, "{loss:?}");
        assert_eq!(a.state(), State::Connecting);
    }
}

/// The pair a restarted peer negotiates on its new IKE SA.
const RESTARTED: ChildPair = ChildPair {
    ike_sa: 2,
    spi_in: 0x500,
    spi_out: 0x600,
};

#[test]
fn a_peer_restart_replaces_the_pair_without_a_link_flap() {
    let mut a = up();
    let out = a.handle(t(5), Event::PeerRestarted { ike_sa: 1 });
    assert_eq!(
        out,
        [
            Command::DeleteSas(P1),
            Command::ArmTimer(t(5).plus(Timing::default().connect_timeout))
        ]
    );
    assert_eq!(a.state(), State::Rekeying);
    assert!(a.link_up());
    assert_eq!(
        a.handle(t(5), Event::ChildSaEstablished(RESTARTED)),
        [Command::InstallSas(RESTARTED)]
    );
    assert!(
        a.handle(t(5), Event::ChildSaInstalled(RESTARTED))
            .is_empty()
    );
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(RESTARTED));
    assert!(a.link_up());
    // The replacement's deadline no longer applies.
    assert!(a.handle(t(60), Event::Timer).is_empty());
    assert_eq!(a.state(), State::Up);
    assert!(a.history().last_error.is_none());
}

#[test]
fn a_restarted_peer_that_brings_no_pair_fails_the_adjacency() {
    let deadline = t(5).plus(Timing::default().connect_timeout);
    for (at, event) in [
        (
            t(6),
            Event::ChildSaFailed {
                reason: "child SA refused: TS_UNACCEPTABLE".into(),
            },
        ),
        (t(6), Event::PeerDeleted { ike_sa: 2 }),
        (deadline, Event::Timer),
    ] {
        let mut a = up();
        a.handle(t(5), Event::PeerRestarted { ike_sa: 1 });
        let out = a.handle(at, event.clone());
        assert_eq!(out.first(), Some(&Command::SetLinkDown), "{event:?}");
        assert!(matches!(a.state(), State::Down { .. }), "{event:?}");
        assert!(!a.link_up());
    }
}

#[test]
fn a_restart_reported_for_an_ike_sa_not_in_use_is_a_plain_deletion() {
    let mut a = up();
    assert!(
        a.handle(t(3), Event::PeerRestarted { ike_sa: 9 })
            .is_empty()
    );
    assert_eq!(a.state(), State::Up);
    let mut connecting = adjacency(false);
    connecting.handle(t(0), Event::Start);
    let out = connecting.handle(t(1), Event::PeerRestarted { ike_sa: 1 });
    assert!(matches!(connecting.state(), State::Down { .. }), "{out:?}");
}

#[test]
fn deleting_a_pair_not_in_use_changes_nothing() {
    let mut a = up();
    assert!(a.handle(t(3), Event::ChildSaDeleted(P2)).is_empty());
    assert!(a.handle(t(3), Event::PeerDeleted { ike_sa: 9 }).is_empty());
    assert_eq!(a.state(), State::Up);
}

#[test]
fn connect_timeout_fails_and_backs_off() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    assert!(
        a.handle(t(29), Event::Timer).is_empty(),
        "early timer ignored"
    );
    let out = a.handle(t(30), Event::Timer);
    let at = retry_at(&a);
    assert_eq!(out.last(), Some(&Command::ArmTimer(at)));
    assert!(!out.contains(&Command::SetLinkDown), "link was never up");
}

/// Fails a connecting adjacency by timeout and returns the back-off delay chosen.
fn fail_once(a: &mut Adjacency, now: Time) -> (Time, Duration) {
    a.handle(now, Event::AuthFailed { reason: "x".into() });
    let at = retry_at(a);
    (at, at.since(now))
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let mut now = t(0);
    let mut nominal = Duration::from_secs(1);
    for _ in 0..15 {
        let (at, delay) = fail_once(&mut a, now);
        assert!(
            delay >= nominal / 2 && delay <= nominal,
            "{delay:?} for {nominal:?}"
        );
        a.handle(at, Event::Timer);
        assert_eq!(a.state(), State::Connecting);
        now = at;
        nominal = (nominal * 2).min(Duration::from_secs(300));
    }
    assert_eq!(nominal, Duration::from_secs(300), "the cap was reached");
}

#[test]
fn jitter_follows_the_seed() {
    let delays = |seed| {
        let mut a = Adjacency::new("b", false, Timing::default(), seed);
        a.handle(t(0), Event::Start);
        let mut now = t(0);
        (0..8)
            .map(|_| {
                let (at, d) = fail_once(&mut a, now);
                a.handle(at, Event::Timer);
                now = at;
                d
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(1), delays(1));
    assert_ne!(delays(1), delays(2));
}

#[test]
fn backoff_resets_after_a_stable_period_only() {
    let grow = |a: &mut Adjacency| {
        let mut now = t(0);
        for _ in 0..6 {
            let (at, _) = fail_once(a, now);
            a.handle(at, Event::Timer);
            now = at;
        }
        now
    };
    let bring_up = |a: &mut Adjacency, now: Time| {
        a.handle(now, Event::ChildSaEstablished(P1));
        a.handle(now, Event::ChildSaInstalled(P1));
        a.handle(now, Event::LinkUp);
        assert_eq!(a.state(), State::Up);
    };

    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let now = grow(&mut a);
    bring_up(&mut a, now);
    let (_, delay) = fail_once(&mut a, now.plus(Duration::from_secs(5)));
    assert!(delay >= Duration::from_secs(32), "short up: {delay:?}");

    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let now = grow(&mut a);
    bring_up(&mut a, now);
    let (_, delay) = fail_once(&mut a, now.plus(Duration::from_secs(60)));
    assert!(delay <= Duration::from_secs(1), "stable up: {delay:?}");
}

#[test]
fn peer_initiation_while_down_brings_it_up() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(30), Event::Timer);
    retry_at(&a);
    let out = a.handle(t(31), Event::ChildSaEstablished(P1));
    assert_eq!(a.state(), State::Connecting);
    assert!(out.contains(&Command::InstallSas(P1)));
    a.handle(t(31), Event::ChildSaInstalled(P1));
    a.handle(t(31), Event::LinkUp);
    assert_eq!(a.state(), State::Up);
}

#[test]
fn passive_never_initiates_but_comes_up() {
    let mut a = adjacency(true);
    let out = a.handle(t(0), Event::Start);
    assert_eq!(out, [Command::CreateLink]);
    assert_eq!(a.state(), State::Connecting);
    a.handle(t(1), Event::ChildSaEstablished(pair(5, 1, 2)));
    a.handle(t(1), Event::ChildSaInstalled(pair(5, 1, 2)));
    a.handle(t(1), Event::LinkUp);
    assert_eq!(a.state(), State::Up);
    let out = a.handle(t(2), Event::LivenessFailed);
    assert!(!out.contains(&Command::Initiate));
    assert!(!out.iter().any(|c| matches!(c, Command::ArmTimer(_))));
    assert_eq!(a.state(), State::Connecting, "waits for the peer");
    assert!(a.handle(t(9999), Event::Timer).is_empty());
    let out = a.handle(t(9999), Event::Initiate);
    assert!(!out.contains(&Command::Initiate));
}

#[test]
fn remove_while_up_tears_down_cleanly() {
    let mut a = up();
    a.handle(t(10), Event::ChildSaRekeyed { old: P1, new: P2 });
    let out = a.handle(t(11), Event::Remove);
    assert_eq!(
        out,
        [
            Command::SetLinkDown,
            Command::DeleteSas(P1),
            Command::DeleteSas(P2),
            Command::DeleteLink
        ]
    );
    assert_eq!(a.state(), State::Removed);
    assert_eq!(a.current(), None);
    // Terminal.
    for e in [Event::Start, Event::Initiate, Event::Timer, Event::LinkUp] {
        assert!(a.handle(t(12), e).is_empty());
        assert_eq!(a.state(), State::Removed);
    }
    assert_eq!(
        a.handle(t(12), Event::ChildSaEstablished(P1)),
        [Command::DeleteSas(P1)]
    );
}

#[test]
fn remove_before_start_creates_nothing_to_delete() {
    let mut a = adjacency(false);
    assert!(a.handle(t(0), Event::Remove).is_empty());
    assert_eq!(a.state(), State::Removed);
}

#[test]
fn terminate_stays_down_until_initiate() {
    let mut a = up();
    let out = a.handle(t(5), Event::Terminate);
    assert_eq!(out, [Command::SetLinkDown, Command::DeleteSas(P1)]);
    assert_eq!(a.state(), State::Configured);
    assert!(a.handle(t(1000), Event::Timer).is_empty());
    assert_eq!(
        a.handle(t(6), Event::ChildSaEstablished(P2)),
        [
            Command::Log("refusing a child SA: adjacency stopped".into()),
            Command::DeleteSas(P2)
        ]
    );
    let out = a.handle(t(7), Event::Initiate);
    assert_eq!(out, [Command::Initiate, Command::ArmTimer(t(37))]);
    assert_eq!(a.state(), State::Connecting);
}

#[test]
fn initiate_while_down_retries_now() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(30), Event::Timer);
    retry_at(&a);
    let out = a.handle(t(30), Event::Initiate);
    assert_eq!(out[0], Command::Initiate);
    assert_eq!(a.state(), State::Connecting);
}

#[test]
fn a_failed_attempt_fails_a_connecting_adjacency_only() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let reason = || "IKE SA refused: NO_PROPOSAL_CHOSEN".to_owned();
    let out = a.handle(t(2), Event::AttemptFailed { reason: reason() });
    assert!(out.contains(&Command::Log(reason())));
    retry_at(&a);
    assert_eq!(
        a.history().last_error,
        Some((t(2), reason())),
        "the refusal is the error shown"
    );
    // A pair already in hand (the peer's crossing initiation) outlives our attempt.
    let mut a = up();
    let out = a.handle(t(3), Event::AttemptFailed { reason: reason() });
    assert_eq!(out, [Command::Log(reason())]);
    assert_eq!(a.state(), State::Up);
}

#[test]
fn traffic_hurries_a_backed_off_adjacency_only() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(30), Event::Timer);
    retry_at(&a);
    let out = a.handle(t(30), Event::Traffic);
    assert_eq!(out, [Command::Initiate, Command::ArmTimer(t(60))]);
    assert_eq!(a.state(), State::Connecting);
    let last = a.history().transitions.back().expect("a transition");
    assert_eq!(last.cause, "traffic waits for SAs");
    // Connecting, up, stopped by the operator, removed: nothing to do.
    assert!(a.handle(t(31), Event::Traffic).is_empty());
    let mut a = up();
    assert!(a.handle(t(31), Event::Traffic).is_empty());
    a.handle(t(32), Event::Terminate);
    assert!(a.handle(t(33), Event::Traffic).is_empty());
    assert_eq!(a.state(), State::Configured);
    a.handle(t(34), Event::Remove);
    assert!(a.handle(t(35), Event::Traffic).is_empty());
}

#[test]
fn history_is_bounded() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let mut now = t(0);
    for _ in 0..100 {
        let (at, _) = fail_once(&mut a, now);
        a.handle(at, Event::Timer);
        now = at;
    }
    assert_eq!(a.history().transitions.len(), HISTORY_LEN);
    assert_eq!(
        a.history().transitions.back().unwrap().to,
        State::Connecting
    );
    assert_eq!(a.record().history, *a.history());
}

/// Every edge of the state diagram, each from a freshly built state.
#[test]
fn every_transition() {
    fn connecting() -> Adjacency {
        let mut a = adjacency(false);
        a.handle(t(0), Event::Start);
        a
    }
    fn rekeying() -> Adjacency {
        let mut a = up();
        a.handle(t(1), Event::RekeyStarted);
        a
    }
    fn rekeyed() -> Adjacency {
        let mut a = rekeying();
        a.handle(t(1), Event::ChildSaRekeyed { old: P1, new: P2 });
        a
    }
    fn down_adj() -> Adjacency {
        let mut a = connecting();
        a.handle(t(30), Event::Timer);
        a
    }
    fn configured() -> Adjacency {
        adjacency(false)
    }
    type Build = fn() -> Adjacency;
    let cases: [(&str, Build, Event, &str); 22] = [
        ("configured start", configured, Event::Start, "Connecting"),
        (
            "configured initiate",
            configured,
            Event::Initiate,
            "Connecting",
        ),
        ("configured remove", configured, Event::Remove, "Removed"),
        ("connecting timeout", connecting, Event::Timer, "Down"),
        (
            "connecting auth",
            connecting,
            Event::AuthFailed { reason: "x".into() },
            "Down",
        ),
        (
            "connecting peer delete",
            connecting,
            Event::PeerDeleted { ike_sa: 4 },
            "Down",
        ),
        (
            "connecting terminate",
            connecting,
            Event::Terminate,
            "Configured",
        ),
        ("connecting remove", connecting, Event::Remove, "Removed"),
        ("up rekey", up, Event::RekeyStarted, "Rekeying"),
        ("up loss", up, Event::LivenessFailed, "Down"),
        ("up terminate", up, Event::Terminate, "Configured"),
        ("up remove", up, Event::Remove, "Removed"),
        ("up shutdown", up, Event::Shutdown, "Removed"),
        ("rekeying done", rekeyed, Event::ChildSaInstalled(P2), "Up"),
        ("rekeying failed", rekeying, Event::RekeyFailed, "Down"),
        ("rekeying expired", rekeying, Event::HardExpire(P1), "Down"),
        ("rekeying remove", rekeying, Event::Remove, "Removed"),
        ("down timer", down_adj, Event::Timer, "Connecting"),
        ("down initiate", down_adj, Event::Initiate, "Connecting"),
        (
            "down peer",
            down_adj,
            Event::ChildSaEstablished(P1),
            "Connecting",
        ),
        ("down terminate", down_adj, Event::Terminate, "Configured"),
        ("down remove", down_adj, Event::Remove, "Removed"),
    ];
    for (name, build, event, want) in cases {
        let mut a = build();
        let before = a.history().transitions.len();
        let at = match a.state() {
            State::Down { retry_at } => retry_at,
            _ => t(1_000),
        };
        a.handle(at, event);
        let got = match a.state() {
            State::Down { .. } => "Down".to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(got, want, "{name}");
        assert_eq!(
            a.history().transitions.len(),
            before + 1,
            "{name}: recorded"
        );
        assert_eq!(a.history().transitions.back().unwrap().at, at, "{name}");
        if got == "Down" {
            assert!(a.history().last_error.is_some(), "{name}");
        }
    }
}

#[test]
fn loss_during_rekey_deletes_both_pairs() {
    let mut a = up();
    a.handle(t(1), Event::ChildSaRekeyed { old: P1, new: P2 });
    let out = a.handle(t(2), Event::RekeyFailed);
    assert_eq!(
        &out[..3],
        [
            Command::SetLinkDown,
            Command::DeleteSas(P1),
            Command::DeleteSas(P2)
        ]
    );
}

#[test]
fn losing_the_old_pair_before_its_replacement_is_installed_keeps_the_link() {
    // Up on the pair of an IKE SA the engine finds redundant, while the surviving IKE
    // SA's pair is still being installed.
    let loser = pair(2, 5, 6);
    let winner = pair(1, 1, 2);
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(0), Event::ChildSaEstablished(loser));
    assert_eq!(
        a.handle(t(0), Event::ChildSaEstablished(winner)),
        [Command::InstallSas(winner)]
    );
    a.handle(t(0), Event::ChildSaInstalled(loser));
    a.handle(t(0), Event::LinkUp);
    assert_eq!(a.state(), State::Up);
    assert!(a.handle(t(1), Event::HardExpire(loser)).is_empty());
    assert_eq!(
        a.state(),
        State::Rekeying,
        "not up until the winner is installed"
    );
    assert!(a.link_up());
    assert!(a.handle(t(1), Event::ChildSaInstalled(winner)).is_empty());
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(winner));
}

/// Up on the pair of IKE SA 12, then the pair of IKE SA 11 (which the engine keeps)
/// arrives and is installed.
fn replaced_by_the_surviving_ike_sa() -> (Adjacency, Vec<Command>) {
    let (loser, winner) = (pair(12, 1, 2), pair(11, 3, 4));
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    a.handle(t(0), Event::ChildSaEstablished(loser));
    a.handle(t(0), Event::ChildSaInstalled(loser));
    a.handle(t(0), Event::LinkUp);
    let mut out = a.handle(t(1), Event::ChildSaEstablished(winner));
    assert_eq!(a.state(), State::Rekeying);
    out.extend(a.handle(t(1), Event::ChildSaInstalled(winner)));
    (a, out)
}

#[test]
fn a_newer_pair_replaces_the_one_in_use_without_flap() {
    let (a, out) = replaced_by_the_surviving_ike_sa();
    assert_eq!(
        out,
        [
            Command::InstallSas(pair(11, 3, 4)),
            Command::DeleteSas(pair(12, 1, 2))
        ]
    );
    assert_eq!(a.state(), State::Up);
    assert!(a.link_up());
    assert_eq!(a.current(), Some(pair(11, 3, 4)));
}

#[test]
fn the_redundant_ike_sa_going_away_changes_nothing() {
    let (mut a, _) = replaced_by_the_surviving_ike_sa();
    let out = a.handle(t(5), Event::PeerDeleted { ike_sa: 12 });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.state(), State::Up);
}

#[test]
fn the_ike_sa_in_use_going_while_a_replacement_is_installed_keeps_the_link() {
    // The engine keeps a duplicate IKE SA after all when the one in use goes: its pair
    // comes first, then the end of the IKE SA in use.
    let mut a = up();
    let successor = pair(2, 5, 6);
    assert_eq!(
        a.handle(t(1), Event::ChildSaEstablished(successor)),
        [Command::InstallSas(successor)]
    );
    let out = a.handle(t(1), Event::PeerDeleted { ike_sa: P1.ike_sa });
    assert!(!out.contains(&Command::SetLinkDown), "{out:?}");
    assert_eq!(a.state(), State::Rekeying);
    assert!(a.link_up());
    a.handle(t(1), Event::ChildSaInstalled(successor));
    assert_eq!(a.state(), State::Up);
    assert_eq!(a.current(), Some(successor));
    assert!(a.history().last_error.is_none());
}

#[test]
fn a_refused_child_sa_fails_the_attempt_at_once() {
    let mut a = adjacency(false);
    a.handle(t(0), Event::Start);
    let reason = "child SA refused: TS_UNACCEPTABLE".to_owned();
    let out = a.handle(
        t(1),
        Event::ChildSaFailed {
            reason: reason.clone(),
        },
    );
    let State::Down { retry_at } = a.state() else {
        panic!("not backing off: {:?}", a.state());
    };
    assert!(out.contains(&Command::ArmTimer(retry_at)));
    assert!(retry_at < t(1).plus(Timing::default().connect_timeout));
    assert_eq!(a.history().last_error, Some((t(1), reason)));
    // Once up, a refused extra child SA changes nothing.
    let mut a = up();
    let out = a.handle(t(1), Event::ChildSaFailed { reason: "r".into() });
    assert_eq!(out, [Command::Log("r".into())]);
    assert_eq!(a.state(), State::Up);
}

#[test]
fn a_passive_neighbors_refusal_stays_the_error_when_its_ike_sa_goes() {
    let mut a = adjacency(true);
    a.handle(t(0), Event::Start);
    a.handle(t(1), Event::IkeSaUp);
    let reason = "child SA refused: NO_PROPOSAL_CHOSEN".to_owned();
    a.handle(
        t(1),
        Event::ChildSaFailed {
            reason: reason.clone(),
        },
    );
    assert_eq!(a.state(), State::Connecting);
    a.handle(t(2), Event::PeerDeleted { ike_sa: 5 });
    assert_eq!(a.history().last_error, Some((t(1), reason)));
    // A later attempt's IKE SA going is that attempt's failure again.
    a.handle(t(3), Event::IkeSaUp);
    a.handle(t(4), Event::PeerDeleted { ike_sa: 6 });
    assert_eq!(
        a.history().last_error,
        Some((t(4), "peer deleted the IKE SA".to_owned()))
    );
}

#[test]
fn a_lost_link_fails_the_adjacency_and_is_made_again() {
    let mut a = up();
    let out = a.handle(t(1), Event::LinkLost);
    let State::Down { retry_at } = a.state() else {
        panic!("not backing off: {:?}", a.state());
    };
    assert_eq!(
        out,
        [
            Command::DeleteSas(P1),
            Command::Log("virtual link lost".into()),
            Command::ArmTimer(retry_at),
            Command::DeleteLink,
            Command::CreateLink
        ]
    );
    assert!(!a.link_up());
    assert_eq!(a.handle(retry_at, Event::Timer)[0], Command::Initiate);
    a.handle(retry_at, Event::ChildSaEstablished(P2));
    let out = a.handle(retry_at, Event::ChildSaInstalled(P2));
    assert_eq!(out, [Command::SetLinkUp]);
    a.handle(retry_at, Event::LinkUp);
    assert_eq!(a.state(), State::Up);
}

#[test]
fn a_pair_the_data_plane_refuses_is_deleted_and_the_attempt_fails() {
    for passive in [false, true] {
        let mut a = adjacency(passive);
        a.handle(t(0), Event::Start);
        assert_eq!(
            a.handle(t(1), Event::ChildSaEstablished(P1)),
            [Command::InstallSas(P1)]
        );
        let refused = |pair| Event::InstallFailed {
            pair,
            reason: "no room".into(),
        };
        assert!(a.handle(t(2), refused(P2)).is_empty(), "not a pair in use");
        let out = a.handle(t(2), refused(P1));
        let why = "cannot install the child SAs: no room".to_owned();
        assert_eq!(
            out[..2],
            [Command::DeleteSas(P1), Command::Log(why.clone())]
        );
        assert_eq!(a.history().last_error, Some((t(2), why)));
        if passive {
            assert_eq!(
                a.state(),
                State::Connecting,
                "waits for the peer's next try"
            );
        } else {
            let State::Down { retry_at } = a.state() else {
                panic!("not backing off: {:?}", a.state());
            };
            assert_eq!(out[2..], [Command::ArmTimer(retry_at)]);
        }
        assert!(a.current().is_none());
    }
}

#[test]
fn a_restored_history_is_carried_on() {
    let mut before = up();
    before.handle(t(5), Event::LivenessFailed);
    let stored = before.history().clone();
    assert_eq!(stored.transitions.len(), 3);

    let mut a = adjacency(false);
    let revision = a.revision();
    a.restore(stored.clone());
    assert_ne!(a.revision(), revision, "the record changed");
    assert_eq!(a.history(), &stored);
    a.handle(t(9), Event::Start);
    let h = a.history();
    assert_eq!(h.last_established, stored.last_established);
    assert_eq!(h.last_error, stored.last_error);
    assert_eq!(h.transitions.len(), 4);
    assert!(h.transitions.iter().take(3).eq(stored.transitions.iter()));
    assert_eq!(
        (h.transitions[3].at, h.transitions[3].to),
        (t(9), State::Connecting)
    );

    // A longer history than is kept loses its oldest transitions.
    let mut long = stored.clone();
    while long.transitions.len() <= 40 {
        long.transitions.push_back(stored.transitions[0].clone());
    }
    let last = long.transitions.back().cloned();
    a.restore(long);
    assert_eq!(a.history().transitions.len(), 32);
    assert_eq!(a.history().transitions.back().cloned(), last);
}

/// A small pool, so that random events often name the pairs in use.
fn any_pair() -> impl Strategy<Value = ChildPair> {
    prop_oneof![
        Just(pair(1, 1, 2)),
        Just(pair(2, 3, 4)),
        Just(pair(1, 5, 6)),
    ]
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Start),
        Just(Event::IkeSaUp),
        any_pair().prop_map(Event::ChildSaEstablished),
        any_pair().prop_map(Event::ChildSaInstalled),
        Just(Event::LinkUp),
        Just(Event::RekeyStarted),
        (any_pair(), any_pair()).prop_map(|(old, new)| Event::ChildSaRekeyed { old, new }),
        any_pair().prop_map(Event::ChildSaDeleted),
        any_pair().prop_map(Event::HardExpire),
        Just(Event::LivenessFailed),
        Just(Event::RekeyFailed),
        Just(Event::ChildSaFailed { reason: "r".into() }),
        Just(Event::LinkLost),
        any_pair().prop_map(|pair| Event::InstallFailed {
            pair,
            reason: "r".into()
        }),
        Just(Event::AuthFailed { reason: "r".into() }),
        (1u64..3).prop_map(|ike_sa| Event::PeerDeleted { ike_sa }),
        (1u64..3).prop_map(|ike_sa| Event::PeerRestarted { ike_sa }),
        Just(Event::Timer),
        Just(Event::Remove),
        Just(Event::Shutdown),
        Just(Event::Terminate),
        Just(Event::Initiate),
        Just(Event::Traffic),
        Just(Event::AttemptFailed {
            reason: "no answer from the peer".into()
        }),
    ]
}

/// The daemon's natural answer to a command, if it has one.
fn answer(c: &Command) -> Option<(Event, Option<Time>)> {
    match c {
        Command::InstallSas(p) => Some((Event::ChildSaInstalled(*p), None)),
        Command::DeleteSas(p) => Some((Event::ChildSaDeleted(*p), None)),
        Command::SetLinkUp => Some((Event::LinkUp, None)),
        Command::ArmTimer(at) => Some((Event::Timer, Some(*at))),
        Command::Initiate => Some((Event::ChildSaEstablished(pair(1, 1, 2)), None)),
        _ => None,
    }
}

/// A step: an arbitrary event, or the answer to one of the commands not yet answered
/// (picked by index), which drives the adjacency through its states far more often than
/// arbitrary events alone.
#[derive(Clone, Debug)]
enum Step {
    Event(Event),
    Answer(usize),
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any_event().prop_map(Step::Event),
        (0usize..8).prop_map(Step::Answer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_events_keep_the_invariants(
        passive in any::<bool>(),
        seed in any::<u64>(),
        steps in proptest::collection::vec((any_step(), 0u64..400_000), 0..80),
    ) {
        let mut a = Adjacency::new("b", passive, Timing::default(), seed);
        let mut now = Time(0);
        let mut removed = false;
        let mut link_up_commanded = false;
        let mut unanswered: Vec<(Event, Option<Time>)> = Vec::new();
        for (step, advance) in steps {
            now = now.plus(Duration::from_millis(advance));
            let event = match step {
                Step::Event(e) => e,
                Step::Answer(_) if unanswered.is_empty() => continue,
                Step::Answer(i) => {
                    let (event, at) = unanswered.remove(i % unanswered.len());
                    now = now.max(at.unwrap_or(now));
                    event
                }
            };
            let (record, revision) = (a.record(), a.revision());
            let out = a.handle(now, event);
            if a.record() != record {
                prop_assert_ne!(a.revision(), revision, "record changed, revision not: {:?}", a.record());
            }
            for c in &out {
                match c {
                    Command::SetLinkUp => link_up_commanded = true,
                    // A link is created down.
                    Command::SetLinkDown | Command::CreateLink => link_up_commanded = false,
                    Command::Initiate => prop_assert!(!passive, "a passive adjacency initiated"),
                    _ => {}
                }
            }
            unanswered.extend(out.iter().filter_map(answer));
            if removed {
                prop_assert_eq!(a.state(), State::Removed);
            }
            removed = a.state() == State::Removed;
            if a.link_up() {
                prop_assert!(matches!(a.state(), State::Up | State::Rekeying));
                prop_assert!(link_up_commanded, "link up without a SetLinkUp in force");
            }
            if a.state() == State::Up {
                prop_assert!(a.link_up());
                prop_assert!(a.current.is_some_and(|c| c.installed));
            }
            if a.state() == State::Rekeying {
                // Without a pair only while a restarted peer's new one is awaited.
                prop_assert!(a.link_up() && (a.current.is_some() || a.timer.is_some()));
            }
            if let State::Down { retry_at } = a.state() {
                prop_assert!(!passive);
                prop_assert_eq!(a.timer, Some(retry_at));
                prop_assert!(a.current.is_none() && !a.link_up());
            }
            if removed {
                prop_assert!(!link_up_commanded && a.current.is_none());
            }
        }
    }
}
