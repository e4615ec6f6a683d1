//! CREATE_CHILD_SA (RFC 7296 §1.3, §2.8, §2.18): new child SAs, child and IKE SA
//! rekeys, and their collisions.

use super::*;

impl IkeSa {
    pub(super) fn start_create_child(&mut self, ctx: &mut Ctx<'_>, rekey: Option<ChildSpis>) {
        let (Ok(spi_in), Ok(nonce)) = (random_u32(), random_bytes(NONCE_LEN)) else {
            return;
        };
        let pfs = ctx.suites.child_pfs;
        let dh = match pfs.map(dh_generate) {
            Some(Ok((d, p))) => Some((d, p)),
            Some(Err(_)) => return,
            None => None,
        };
        let mut inner = Vec::new();
        if let Some(old) = rekey {
            inner.push(esp_notify(NotifyType::REKEY_SA, old.inbound));
        }
        inner.extend(self.child_request_payloads(ctx, spi_in, pfs));
        inner.push(Payload::Nonce(nonce.clone()));
        let dh = dh.map(|(d, public)| {
            inner.push(Payload::Ke(KeyExchange {
                group: d.group().id(),
                data: public,
            }));
            d
        });
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Pending::CreateChild {
                spi_in,
                nonce,
                dh,
                rekey,
            },
        );
    }

    pub(super) fn start_rekey_ike(&mut self, ctx: &mut Ctx<'_>) {
        let (Ok(spi), Ok(nonce)) = (random_u64(), random_bytes(NONCE_LEN)) else {
            return;
        };
        let suite = self.suite;
        let Ok((dh, public)) = dh_generate(suite.dh) else {
            return;
        };
        let mut suites = vec![suite];
        suites.extend(ctx.suites.ike.iter().filter(|s| **s != suite));
        suites.retain(|s| s.dh == suite.dh);
        let inner = vec![
            Payload::Sa(proposal::ike_proposals(&suites, &spi.to_be_bytes())),
            Payload::Nonce(nonce.clone()),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
        ];
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Pending::RekeyIke { spi, nonce, dh },
        );
    }

    pub(super) fn on_create_child_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Vec<Payload> {
        let is_ike = payloads.iter().any(|p| {
            matches!(p, Payload::Sa(s) if s.first().is_some_and(|p| p.protocol == ProtocolId::IKE))
        });
        // RFC 7296 §2.25: no child SA exchanges while the IKE SA is rekeyed and no IKE SA
        // rekey while a child SA exchange is under way.
        let busy = match self.requests.outstanding.as_ref().map(|o| &o.exchange) {
            Some(Pending::RekeyIke { .. }) => !is_ike,
            Some(Pending::CreateChild { .. } | Pending::DeleteChildren(_)) => is_ike,
            _ => false,
        };
        if self.phase == Phase::Rekeyed || busy {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        }
        let Some(ni) = find_payload!(payloads, Payload::Nonce).cloned() else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let Ok(nr) = random_bytes(NONCE_LEN) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let ke = find_payload!(payloads, Payload::Ke);
        if is_ike {
            return self.answer_rekey_ike(ctx, payloads, ke, &ni, nr);
        }
        let rekeyed = find_notify(payloads, NotifyType::REKEY_SA)
            .and_then(|n| n.spi.as_slice().try_into().ok().map(u32::from_be_bytes));
        let old = match rekeyed {
            Some(spi) => match self.children.iter().find(|c| c.sa.spis.outbound == spi) {
                Some(c) if c.state == ChildState::Installed => Some(c.sa.spis),
                Some(_) => return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())],
                None => {
                    return vec![esp_notify(NotifyType::CHILD_SA_NOT_FOUND, spi)];
                }
            },
            None => None,
        };
        let (shared, ke_out) = match ke {
            None => (None, None),
            Some(ke) => {
                let acceptable = ctx.suites.child_pfs == Some(ke.group)
                    || (ctx.suites.child_pfs.is_none() && crate::sa::keys::dh_supported(ke.group));
                if !acceptable {
                    let want = ctx.suites.child_pfs.unwrap_or(DhId::CURVE25519);
                    return vec![notify(
                        NotifyType::INVALID_KE_PAYLOAD,
                        want.0.to_be_bytes().to_vec(),
                    )];
                }
                let Ok((dh, public)) = dh_generate(ke.group) else {
                    return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
                };
                let Ok(shared) = dh.shared_secret(&ke.data) else {
                    return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
                };
                (
                    Some(shared),
                    Some(Payload::Ke(KeyExchange {
                        group: ke.group,
                        data: public,
                    })),
                )
            }
        };
        let (child, mut reply) = match self.answer_child(ctx, payloads, shared.as_ref(), &ni, &nr) {
            Ok(r) => r,
            Err(kind) => return vec![notify(kind, Vec::new())],
        };
        reply.push(Payload::Nonce(nr.clone()));
        reply.extend(ke_out);
        self.responder_child_created(ctx, child, old, &ni, &nr);
        reply
    }

    pub(super) fn responder_child_created(
        &mut self,
        ctx: &mut Ctx<'_>,
        child: ChildSa,
        old: Option<ChildSpis>,
        ni: &[u8],
        nr: &[u8],
    ) {
        let Some(old) = old else {
            ctx.events.push_back(Event::ChildSaUp(child.clone()));
            return self.add_child(ctx, child);
        };
        let ours_outstanding = matches!(
            self.requests.outstanding.as_ref().map(|o| &o.exchange),
            Some(Pending::CreateChild { rekey: Some(r), .. }) if *r == old
        );
        if ours_outstanding {
            // §2.8.1: decide when our own rekey of it completes.
            if let Some(c) = self.children.iter_mut().find(|c| c.sa.spis == old) {
                c.collision = Some(Box::new((child, lowest(ni, nr).to_vec())));
            }
            return;
        }
        self.tasks.retain(|t| *t != Task::RekeyChild(old));
        self.replace_child(ctx, old, child, false);
    }

    /// `new` takes over from `old`, which stays until its DELETE; `initiated` says whether
    /// we initiated the exchange that created `new`.
    pub(super) fn replace_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: ChildSpis,
        new: ChildSa,
        initiated: bool,
    ) {
        let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.sa.spis == old && c.state == ChildState::Installed)
        else {
            // The old SA went away meanwhile: the new one has nothing to replace.
            let spis = new.spis;
            self.add_child(ctx, new);
            if let Some(c) = self.children.last_mut() {
                c.state = ChildState::Rekeyed;
                c.announced = false;
            }
            return self.queue(Task::DeleteChild(spis));
        };
        c.state = ChildState::Rekeyed;
        c.rekey_at = None;
        ctx.events.push_back(Event::ChildSaRekeyed {
            old,
            new: new.clone(),
            initiated,
        });
        self.add_child(ctx, new);
    }

    pub(super) fn on_create_child_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        spi_in: u32,
        ni: Vec<u8>,
        dh: Option<DhPrivate>,
        rekey: Option<ChildSpis>,
    ) {
        let nr = find_payload!(payloads, Payload::Nonce).cloned();
        let pfs = dh.as_ref().map(|d| d.group().id());
        let shared = match (&dh, find_payload!(payloads, Payload::Ke)) {
            (Some(dh), Some(ke)) if Some(ke.group) == pfs => dh.shared_secret(&ke.data).ok(),
            _ => None,
        };
        let result = match nr.as_ref() {
            Some(_) if dh.is_some() && shared.is_none() && error_notify(payloads).is_none() => {
                Err(NotifyType::INVALID_SYNTAX)
            }
            Some(nr) => self.accept_child(
                ctx,
                payloads,
                spi_in,
                ChildKeying {
                    pfs,
                    shared: shared.as_ref(),
                    ni: &ni,
                    nr,
                },
            ),
            None => Err(error_notify(payloads).unwrap_or(NotifyType::INVALID_SYNTAX)),
        };
        let collision = rekey.and_then(|old| {
            self.children
                .iter_mut()
                .find(|c| c.sa.spis == old)
                .and_then(|c| c.collision.take().map(|b| *b))
        });
        match (result, rekey) {
            (Ok(child), None) => {
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            (Ok(child), Some(old)) => {
                let ours_lowest = nr.as_deref().map(|nr| lowest(&ni, nr).to_vec());
                match collision {
                    Some((theirs, their_lowest)) if ours_lowest.as_ref() < Some(&their_lowest) => {
                        // Our new SA is the redundant one: the peer deletes the old.
                        self.replace_child(ctx, old, theirs, false);
                        self.add_child(ctx, child.clone());
                        if let Some(c) = self.children.last_mut() {
                            c.state = ChildState::Rekeyed;
                            c.announced = false;
                        }
                        self.queue(Task::DeleteChild(child.spis));
                    }
                    Some(_) => {
                        // Theirs is redundant and the peer deletes it; we delete the old.
                        self.replace_child(ctx, old, child, true);
                        self.queue(Task::DeleteChild(old));
                    }
                    None => {
                        self.replace_child(ctx, old, child, true);
                        self.queue(Task::DeleteChild(old));
                    }
                }
            }
            (Err(kind), rekey) => {
                debug!(sa = ?self.id, notify = ?kind, "child SA refused");
                self.delete_refused_answer(payloads, spi_in);
                match (rekey, collision) {
                    (Some(old), Some((theirs, _))) => self.replace_child(ctx, old, theirs, false),
                    (Some(old), None) => {
                        // Try again later unless the peer rekeyed or deleted it meanwhile.
                        let retry = ctx.retry_time();
                        if let Some(c) = self
                            .children
                            .iter_mut()
                            .find(|c| c.sa.spis == old && c.state == ChildState::Installed)
                        {
                            c.rekey_at = Some(retry);
                        }
                    }
                    (None, _) => ctx.events.push_back(Event::ChildSaFailed {
                        ike_sa: self.id,
                        notify: kind,
                    }),
                }
            }
        }
    }

    /// As responder: the peer rekeys this IKE SA (§2.18).
    pub(super) fn answer_rekey_ike(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        ke: Option<&KeyExchange>,
        ni: &[u8],
        nr: Vec<u8>,
    ) -> Vec<Payload> {
        let offered = find_payload!(payloads, Payload::Sa)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let supported = ctx.ike_suites();
        let Some((suite, chosen)) = proposal::choose_ike(&supported, offered) else {
            return vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())];
        };
        let Some(ke) = ke.filter(|k| k.group == suite.dh) else {
            return vec![notify(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.0.to_be_bytes().to_vec(),
            )];
        };
        let Ok(spi_i) = <[u8; 8]>::try_from(chosen.spi.as_slice()).map(u64::from_be_bytes) else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let (Ok(spi_r), Ok((dh, public))) = (random_u64(), dh_generate(suite.dh)) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let Some(new) = self.successor(ctx, suite, &shared, false, spi_i, spi_r, ni, &nr) else {
            return vec![notify(NotifyType::TEMPORARY_FAILURE, Vec::new())];
        };
        let ours_outstanding = matches!(
            self.requests.outstanding.as_ref().map(|o| &o.exchange),
            Some(Pending::RekeyIke { .. })
        );
        if ours_outstanding {
            self.ike_collision = Some(Box::new((spi_r, lowest(ni, &nr).to_vec())));
        } else {
            self.tasks.retain(|t| *t != Task::RekeyIke);
            self.hand_over(ctx, spi_r);
        }
        ctx.spawned.push(new);
        vec![
            Payload::Sa(vec![proposal::ike_answer(
                &suite,
                chosen,
                spi_r.to_be_bytes().to_vec(),
            )]),
            Payload::Nonce(nr),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
        ]
    }

    /// The IKE SA a rekey creates; it waits for [`Self::hand_over`] before it is used.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn successor(
        &self,
        ctx: &Ctx<'_>,
        suite: IkeSuite,
        shared: &Secret,
        we_initiated: bool,
        spi_i: u64,
        spi_r: u64,
        ni: &[u8],
        nr: &[u8],
    ) -> Option<IkeSa> {
        let old = self.keys.as_ref()?;
        let x = Exchanged {
            shared,
            ni,
            nr,
            spi_i,
            spi_r,
        };
        let keys = IkeKeys::derive(
            &suite,
            &x,
            Some((old.prf, &old.sk_d)),
            we_initiated,
            ctx.config.log_keys,
        )
        .ok()?;
        let mut sa = Self::blank(
            self.id,
            we_initiated,
            spi_i,
            spi_r,
            self.local,
            self.remote,
            suite,
            ctx.now,
        );
        sa.nat_t = self.nat_t;
        sa.udp_encap = self.udp_encap;
        sa.peer_fragmentation = self.peer_fragmentation;
        sa.phase = Phase::Established;
        sa.established = Some(ctx.now);
        sa.peer = self.peer.clone();
        sa.keys = Some(keys);
        sa.ni = ni.to_vec();
        sa.nr = nr.to_vec();
        sa.rekey_at = ctx.rekey_time(ctx.config.lifetimes.ike_rekey);
        sa.successor_of = Some(self.local_spi());
        Some(sa)
    }

    /// Marks this SA as replaced by the one with local SPI `new`; the engine moves the
    /// children there.
    pub(super) fn hand_over(&mut self, ctx: &mut Ctx<'_>, new: u64) {
        self.phase = Phase::Rekeyed;
        self.since = ctx.now;
        self.rekey_at = None;
        ctx.handovers.push((self.local_spi(), new));
    }

    pub(super) fn on_rekey_ike_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        spi_i: u64,
        ni: Vec<u8>,
        dh: DhPrivate,
    ) {
        let collision = self.ike_collision.take().map(|b| *b);
        let answer = find_payload!(payloads, Payload::Sa).map(Vec::as_slice);
        let nr = find_payload!(payloads, Payload::Nonce).cloned();
        let ke = find_payload!(payloads, Payload::Ke);
        let new = match (answer, nr.as_ref(), ke) {
            (Some(answer), Some(nr), Some(ke)) if error_notify(payloads).is_none() => {
                let suite = proposal::accepted_ike(&ctx.suites.ike, answer)
                    .filter(|s| s.dh == dh.group().id() && ke.group == s.dh);
                let spi_r = answer
                    .first()
                    .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
                    .map(u64::from_be_bytes);
                match (suite, spi_r, dh.shared_secret(&ke.data)) {
                    (Some(suite), Some(spi_r), Ok(shared)) => {
                        self.successor(ctx, suite, &shared, true, spi_i, spi_r, &ni, nr)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(mut new) = new else {
            debug!(sa = ?self.id, "IKE SA rekey refused");
            match collision {
                Some((theirs, _)) => self.hand_over(ctx, theirs),
                None => self.rekey_at = Some(ctx.retry_time()),
            }
            return;
        };
        let ours_lowest = nr.as_deref().map(|nr| lowest(&ni, nr).to_vec());
        match collision {
            Some((theirs, their_lowest)) if ours_lowest.as_ref() < Some(&their_lowest) => {
                // §2.8.2: ours has the lowest nonce; we delete it, the peer the old SA.
                new.queue(Task::DeleteIke);
                self.hand_over(ctx, theirs);
            }
            _ => {
                self.hand_over(ctx, new.local_spi());
                self.queue(Task::DeleteIke);
            }
        }
        ctx.spawned.push(new);
    }
}
