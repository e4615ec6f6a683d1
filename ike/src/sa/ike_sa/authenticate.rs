//! IKE_AUTH (RFC 7296 §1.2, §2.15) with the first child SA, and the child SA
//! negotiation that CREATE_CHILD_SA shares.

use super::*;
use crate::ts::TrafficSelector;
use crate::wire::Proposal;

impl IkeSa {
    /// The octets one side signs (RFC 7296 §2.15): its IKE_SA_INIT message, the other
    /// side's nonce, prf(SK_p, its ID payload body).
    pub(super) fn octets(&self, ours: bool, id: &Identification) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        let sk_p = keys.sk_p.as_ref()?;
        let init = self.init_messages.as_deref()?;
        let (message, nonce, sk_p) = match (ours, self.initiator) {
            (true, true) => (&init.ours, &self.nr, &sk_p.ours),
            (true, false) => (&init.ours, &self.ni, &sk_p.ours),
            (false, true) => (&init.theirs, &self.ni, &sk_p.peer),
            (false, false) => (&init.theirs, &self.nr, &sk_p.peer),
        };
        Some(auth::signed_octets(
            message,
            nonce,
            keys.prf,
            sk_p.expose(),
            &payload_body(id),
        ))
    }

    /// Our AUTH payload for our ID payload `id`.
    pub(super) fn our_auth(&self, id: &Identification) -> Option<Authentication> {
        let keys = self.keys.as_ref()?;
        let octets = self.octets(true, id)?;
        Some(match &self.peer.as_ref()?.local_auth {
            LocalAuth::Psk(psk) => Authentication {
                method: AuthMethod::SHARED_KEY,
                data: auth::psk_auth(keys.prf, psk, &octets).expose().to_vec(),
            },
            LocalAuth::Certificate { key, .. } => Authentication {
                method: key.method(),
                data: key.sign(&octets),
            },
        })
    }

    /// Our certificate chain as CERT payloads, if we authenticate with one.
    pub(super) fn our_certificates(&self) -> Vec<Payload> {
        match self.peer.as_ref().map(|p| &p.local_auth) {
            Some(LocalAuth::Certificate { chain, .. }) => chain
                .iter()
                .map(|der| {
                    Payload::Cert(Certificate {
                        encoding: CertEncoding::X509_SIGNATURE,
                        data: der.clone(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the peer proved to be `peer.remote_id`: its AUTH over its ID payload `id`,
    /// and for certificates the chain in `payloads` and the identity it is issued for.
    pub(super) fn verify_peer_auth(
        &self,
        ctx: &Ctx<'_>,
        peer: &PeerConfig,
        id: &Identification,
        auth: &Authentication,
        payloads: &[Payload],
    ) -> Result<(), AuthError> {
        let keys = self.keys.as_ref().ok_or(AuthError::Mismatch)?;
        if id_from_wire(id).as_ref() != Some(&peer.remote_id) {
            return Err(AuthError::Mismatch);
        }
        let octets = self.octets(false, id).ok_or(AuthError::Mismatch)?;
        match &peer.remote_auth {
            PeerAuth::Psk(psk) => {
                if auth.method != AuthMethod::SHARED_KEY {
                    return Err(AuthError::UnsupportedMethod(auth.method));
                }
                auth::verify_psk(keys.prf, psk, &octets, &auth.data)
            }
            PeerAuth::Certificate(anchors) => {
                let mut certs = payloads.iter().filter_map(|p| match p {
                    Payload::Cert(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                        Some(c.data.clone())
                    }
                    _ => None,
                });
                let end_entity = certs.next().ok_or(AuthError::Mismatch)?;
                let intermediates: Vec<Vec<u8>> = certs.collect();
                let validated = anchors.validate_peer(&end_entity, &intermediates, ctx.wall)?;
                if !validated.matches(&peer.remote_id) {
                    return Err(AuthError::Mismatch);
                }
                auth::verify(validated.cert_der(), auth.method, &auth.data, &octets)
            }
        }
    }

    pub(super) fn child_request_payloads(
        &self,
        ctx: &Ctx<'_>,
        spi_in: u32,
        pfs: Option<DhId>,
    ) -> Vec<Payload> {
        let Some(peer) = self.peer.as_ref() else {
            return Vec::new();
        };
        let suites = ctx.esp_suites();
        vec![
            notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()),
            notify(NotifyType::ESP_TFC_PADDING_NOT_SUPPORTED, Vec::new()),
            Payload::Sa(proposal::esp_proposals(&suites, spi_in, pfs)),
            Payload::TsI(peer.ts_local.to_vec()),
            Payload::TsR(peer.ts_remote.to_vec()),
        ]
    }

    pub(super) fn send_auth(&mut self, ctx: &mut Ctx<'_>) {
        let Some(peer) = self.peer.clone() else {
            return;
        };
        let id = id_to_wire(&peer.local_id);
        let Some(auth) = self.our_auth(&id) else {
            return self.down(ctx, DownReason::Local("cannot compute AUTH".into()));
        };
        let Ok(spi_in) = random_u32() else {
            return self.down(ctx, DownReason::Local("no randomness".into()));
        };
        let mut inner = vec![Payload::IdI(id)];
        inner.extend(self.our_certificates());
        if !ctx.others_with_peer {
            // Only then is it true that this is the only IKE SA between us (§3.16): the
            // peer ends every older one, so saying it during crossing initiations would
            // end the other's.
            inner.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        }
        if let PeerAuth::Certificate(anchors) = &peer.remote_auth {
            inner.push(Payload::CertReq(Certificate {
                encoding: CertEncoding::X509_SIGNATURE,
                data: anchors.certreq_data(),
            }));
        }
        inner.push(Payload::IdR(id_to_wire(&peer.remote_id)));
        inner.push(Payload::Auth(auth));
        inner.extend(self.child_request_payloads(ctx, spi_in, None));
        self.phase = Phase::AuthSent;
        self.send_request(
            ctx,
            ExchangeType::IKE_AUTH,
            &inner,
            Pending::Auth { spi_in },
        );
    }

    /// As responder: the IKE_AUTH request. Returns the response payloads.
    pub(super) fn on_auth_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Vec<Payload> {
        log_certreqs(self.id, payloads);
        let idi = find_payload!(payloads, Payload::IdI);
        let auth = find_payload!(payloads, Payload::Auth);
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())];
        };
        let claimed = id_from_wire(idi);
        let peer = claimed
            .as_ref()
            .and_then(|id| ctx.policy.peer(id, self.remote))
            .filter(|p| Some(&p.remote_id) == claimed.as_ref());
        let verified = peer
            .as_ref()
            .map(|p| self.verify_peer_auth(ctx, p, idi, auth, payloads));
        let Some(peer) = peer.filter(|_| matches!(verified, Some(Ok(())))) else {
            let reason = match verified {
                Some(Err(e)) => e.to_string(),
                _ => "no neighbor with this identity at this address".to_owned(),
            };
            warn!(sa = ?self.id, remote = %self.remote, reason, "peer failed to authenticate");
            ctx.events.push_back(Event::AuthFailed {
                sa: self.id,
                remote: self.remote,
                peer: claimed,
                reason,
            });
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())];
        };
        self.peer = Some(peer.clone());
        self.initial_contact = has_notify(payloads, NotifyType::INITIAL_CONTACT);
        let id = id_to_wire(&peer.local_id);
        let Some(our_auth) = self.our_auth(&id) else {
            self.phase = Phase::Dead;
            return vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())];
        };
        let mut out = vec![Payload::IdR(id)];
        out.extend(self.our_certificates());
        out.push(Payload::Auth(our_auth));
        self.authenticated(ctx);
        ctx.events.push_back(self.up_event(&peer));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        match self.answer_child(ctx, payloads, None, &ni, &nr) {
            Ok((child, reply)) => {
                out.extend(reply);
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            Err(kind) => {
                if payloads.iter().any(|p| matches!(p, Payload::Sa(_))) {
                    ctx.events.push_back(Event::ChildSaFailed {
                        ike_sa: self.id,
                        notify: kind,
                    });
                    out.push(notify(kind, Vec::new()));
                }
            }
        }
        out
    }

    pub(super) fn up_event(&self, peer: &PeerConfig) -> Event {
        Event::IkeSaUp {
            sa: self.id,
            peer: peer.remote_id.clone(),
            local: self.local,
            remote: self.remote,
            suite: self.suite,
            we_initiated: self.initiator,
        }
    }

    /// Both ends are authenticated: the SA is established. The IKE_SA_INIT messages were
    /// kept only to be signed and to recognise a retransmitted first request, SK_p only to
    /// sign.
    fn authenticated(&mut self, ctx: &Ctx<'_>) {
        self.phase = Phase::Established;
        self.established = Some(ctx.now);
        self.last_heard = ctx.now;
        self.rekey_at = ctx.rekey_time(ctx.config.lifetimes.ike_rekey);
        self.init_messages = None;
        if let Some(keys) = &mut self.keys {
            keys.sk_p = None;
        }
    }

    pub(super) fn add_child(&mut self, ctx: &Ctx<'_>, sa: ChildSa) {
        // Most IKE SAs carry one child at a time; the default growth would reserve four.
        self.children.reserve_exact(1);
        self.children.push(Child {
            sa,
            state: ChildState::Installed,
            established: ctx.now,
            rekey_at: ctx.rekey_time(ctx.config.lifetimes.child_rekey),
            collision: None,
            announced: true,
        });
    }

    /// As responder: a child SA request (IKE_AUTH or CREATE_CHILD_SA). Returns the child
    /// and the payloads of the answer, or the error notification refusing it.
    pub(super) fn answer_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        shared: Option<&Secret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let (offered, tsi, tsr) = transport_child(payloads)?;
        let pfs = find_payload!(payloads, Payload::Ke).map(|k| k.group);
        let suites = ctx.esp_suites();
        let (suite, chosen) =
            proposal::choose_esp(&suites, pfs, offered).ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let spi_out = u32::from_be_bytes(
            chosen
                .spi
                .as_slice()
                .try_into()
                .map_err(|_| NotifyType::INVALID_SYNTAX)?,
        );
        let peer = self.peer.clone().ok_or(NotifyType::AUTHENTICATION_FAILED)?;
        let (tsi, tsr) = ctx.policy.narrow(&peer, tsi, tsr)?;
        let spi_in = random_u32().map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
        let keys = self.keys.as_ref().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        let child = ChildSa::derive(
            keys,
            Negotiated {
                suite,
                spis: ChildSpis {
                    inbound: spi_in,
                    outbound: spi_out,
                },
                ts_local: tsr.clone(),
                ts_remote: tsi.clone(),
                shared,
                ni,
                nr,
            },
            false,
            self.id,
            self.local,
            self.remote,
            self.udp_encap,
            ctx.config.lifetimes.child_hard,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        let reply = vec![
            notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()),
            notify(NotifyType::ESP_TFC_PADDING_NOT_SUPPORTED, Vec::new()),
            Payload::Sa(vec![proposal::esp_answer(&suite, pfs, chosen, spi_in)]),
            Payload::TsI(tsi),
            Payload::TsR(tsr),
        ];
        Ok((child, reply))
    }

    /// As initiator: the child SA part of an IKE_AUTH or CREATE_CHILD_SA response.
    pub(super) fn accept_child(
        &self,
        ctx: &Ctx<'_>,
        payloads: &[Payload],
        spi_in: u32,
        keying: ChildKeying<'_>,
    ) -> Result<ChildSa, NotifyType> {
        let ChildKeying {
            pfs,
            shared,
            ni,
            nr,
        } = keying;
        if let Some(kind) = error_notify(payloads) {
            return Err(kind);
        }
        let (answer, tsi, tsr) = transport_child(payloads)?;
        let (suite, spi_out) = proposal::accepted_esp(&ctx.suites.esp, pfs, answer)
            .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
        let peer = self
            .peer
            .as_ref()
            .ok_or(NotifyType::AUTHENTICATION_FAILED)?;
        ctx.policy.accept_narrowed(peer, tsi, tsr)?;
        let keys = self.keys.as_ref().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        ChildSa::derive(
            keys,
            Negotiated {
                suite,
                spis: ChildSpis {
                    inbound: spi_in,
                    outbound: spi_out,
                },
                ts_local: tsi.to_vec(),
                ts_remote: tsr.to_vec(),
                shared,
                ni,
                nr,
            },
            true,
            self.id,
            self.local,
            self.remote,
            self.udp_encap,
            ctx.config.lifetimes.child_hard,
        )
        .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)
    }

    pub(super) fn on_auth_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
        spi_in: u32,
    ) {
        let idr = find_payload!(payloads, Payload::IdR);
        let auth = find_payload!(payloads, Payload::Auth);
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let kind = error_notify(payloads).unwrap_or(NotifyType::INVALID_SYNTAX);
            if kind == NotifyType::AUTHENTICATION_FAILED {
                ctx.events.push_back(Event::AuthFailed {
                    sa: self.id,
                    remote: self.remote,
                    peer: self.peer_id().cloned(),
                    reason: "the peer refused our authentication".to_owned(),
                });
                return self.down(ctx, DownReason::AuthFailed);
            }
            return self.down(ctx, DownReason::Refused(kind));
        };
        let Some(peer) = self.peer.clone() else {
            return self.down(ctx, DownReason::AuthFailed);
        };
        if let Err(e) = self.verify_peer_auth(ctx, &peer, idr, auth, payloads) {
            warn!(sa = ?self.id, remote = %self.remote, error = %e, "responder failed to authenticate");
            ctx.events.push_back(Event::AuthFailed {
                sa: self.id,
                remote: self.remote,
                peer: id_from_wire(idr),
                reason: e.to_string(),
            });
            // RFC 7296 §2.21.2: tell the responder, without waiting for an answer.
            let header = self.header(ExchangeType::INFORMATIONAL, false, self.requests.next_id);
            self.seal(
                ctx,
                &header,
                &[notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())],
            );
            return self.down(ctx, DownReason::AuthFailed);
        }
        self.authenticated(ctx);
        ctx.events.push_back(self.up_event(&peer));
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        match self.accept_child(
            ctx,
            payloads,
            spi_in,
            ChildKeying {
                pfs: None,
                shared: None,
                ni: &ni,
                nr: &nr,
            },
        ) {
            Ok(child) => {
                ctx.events.push_back(Event::ChildSaUp(child.clone()));
                self.add_child(ctx, child);
            }
            Err(kind) => {
                self.delete_refused_answer(payloads, spi_in);
                ctx.events.push_back(Event::ChildSaFailed {
                    ike_sa: self.id,
                    notify: kind,
                });
            }
        }
    }

    /// We refused a responder's answer (tunnel mode, selectors, suite) that created a
    /// child SA on its side: delete it there, so the peer does not keep an SA we never use.
    /// An answer that refused the child itself created nothing.
    pub(super) fn delete_refused_answer(&mut self, payloads: &[Payload], spi_in: u32) {
        if error_notify(payloads).is_none() && find_payload!(payloads, Payload::Sa).is_some() {
            // Only our inbound SPI goes into the DELETE; no child of ours has it.
            self.queue(Task::DeleteChild(ChildSpis {
                inbound: spi_in,
                outbound: 0,
            }));
        }
    }
}

/// The SA, TSi and TSr payloads of a child SA request or answer.
type ChildPayloads<'a> = (&'a [Proposal], &'a [TrafficSelector], &'a [TrafficSelector]);

/// The child SA payloads of a request or answer, which must be for transport mode:
/// iiptran never creates tunnel-mode SAs.
fn transport_child(payloads: &[Payload]) -> Result<ChildPayloads<'_>, NotifyType> {
    let sa = find_payload!(payloads, Payload::Sa);
    let tsi = find_payload!(payloads, Payload::TsI);
    let tsr = find_payload!(payloads, Payload::TsR);
    let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
        return Err(NotifyType::INVALID_SYNTAX);
    };
    if !has_notify(payloads, NotifyType::USE_TRANSPORT_MODE) {
        return Err(NotifyType::NO_PROPOSAL_CHOSEN);
    }
    Ok((sa, tsi, tsr))
}

/// We send our certificate chain whatever the peer asks for; its CERTREQ payloads only
/// tell, in the log, which CAs it trusts.
fn log_certreqs(sa: IkeSaId, payloads: &[Payload]) {
    for request in payloads.iter().filter_map(|p| match p {
        Payload::CertReq(c) if c.encoding == CertEncoding::X509_SIGNATURE => Some(c),
        _ => None,
    }) {
        match auth::parse_ca_hashes(&request.data) {
            Some(hashes) => debug!(
                ?sa,
                authorities = ?hashes.iter().map(hex::encode).collect::<Vec<_>>(),
                "peer requests certificates"
            ),
            None => debug!(?sa, "malformed CERTREQ ignored"),
        }
    }
}
