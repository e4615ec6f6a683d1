//! IKE_SA_INIT (RFC 7296 §1.2, §2.6, §2.23): proposals, key exchange and nonces,
//! cookies and INVALID_KE_PAYLOAD retries, NAT detection.

use super::*;

impl IkeSa {
    pub(super) fn init_notifies(&self, ctx: &Ctx<'_>, spi_r: u64) -> Vec<Payload> {
        let (src, dst) = if ctx.config.force_nat_t {
            // A hash no address matches makes the peer float to 4500 as well.
            (vec![0; 20], vec![0; 20])
        } else {
            (
                detection_hash(self.spi_i, spi_r, self.local),
                detection_hash(self.spi_i, spi_r, self.remote),
            )
        };
        vec![
            notify(NotifyType::NAT_DETECTION_SOURCE_IP, src),
            notify(NotifyType::NAT_DETECTION_DESTINATION_IP, dst),
            notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()),
            notify(
                NotifyType::SIGNATURE_HASH_ALGORITHMS,
                auth::our_hash_algorithms(),
            ),
        ]
    }

    /// Starts an IKE SA as initiator.
    pub fn initiate(
        ctx: &mut Ctx<'_>,
        id: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
        peer: Arc<PeerConfig>,
    ) -> Result<Self, crate::sa::keys::KeyError> {
        let suite = *ctx
            .suites
            .ike
            .first()
            .ok_or(CryptoError::Unsupported("IKE SA without configured suites"))?;
        let mut sa = Self::blank(id, true, random_u64()?, 0, local, remote, suite, ctx.now);
        sa.peer = Some(peer);
        sa.ni = random_bytes(NONCE_LEN)?;
        let (dh, public) = dh_generate(suite.dh)?;
        sa.send_init(ctx, dh, public, None, 0);
        Ok(sa)
    }

    pub(super) fn send_init(
        &mut self,
        ctx: &mut Ctx<'_>,
        dh: DhPrivate,
        public: Vec<u8>,
        cookie: Option<Vec<u8>>,
        retries: u8,
    ) {
        let group = dh.group().id();
        // The suites whose group we sent go first so the responder can take our KE.
        let mut suites = ctx.suites.ike.clone();
        suites.sort_by_key(|s| s.dh != group);
        let mut payloads = Vec::new();
        if let Some(c) = &cookie {
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        payloads.push(Payload::Sa(proposal::ike_proposals(&suites, &[])));
        payloads.push(Payload::Ke(KeyExchange {
            group,
            data: public,
        }));
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(self.init_notifies(ctx, 0));
        let header = self.header(ExchangeType::IKE_SA_INIT, false, 0);
        let Some(datagram) = plain(header, payloads) else {
            return;
        };
        self.init_messages.get_or_insert_default().ours = datagram.clone();
        let datagram = with_marker(self.nat_t, datagram);
        self.transmit(ctx, std::slice::from_ref(&datagram));
        self.requests = Requests::new(0);
        self.requests.start(
            ctx.now,
            &ctx.config.retransmission,
            vec![datagram],
            Pending::Init(InitAttempt {
                dh,
                cookie,
                retries,
            }),
        );
    }

    /// Our NAT detection: whether the peer's view of either address differs.
    pub(super) fn nat_detected(&self, payloads: &[Payload], spi_r: u64) -> bool {
        let matches = |kind, addr| {
            let expected = detection_hash(self.spi_i, spi_r, addr);
            payloads
                .iter()
                .any(|p| matches!(p, Payload::Notify(n) if n.kind == kind && n.data == expected))
                || !has_notify(payloads, kind)
        };
        !(matches(NotifyType::NAT_DETECTION_SOURCE_IP, self.remote)
            && matches(NotifyType::NAT_DETECTION_DESTINATION_IP, self.local))
    }

    pub(super) fn float_to_nat_t(&mut self) {
        self.local.set_port(NAT_T_PORT);
        self.remote.set_port(NAT_T_PORT);
        self.nat_t = true;
    }

    /// Answers an IKE_SA_INIT request as responder. Returns the half-open SA, or `None`
    /// when the request was refused (the refusal is already sent).
    #[allow(clippy::too_many_arguments)]
    pub fn respond_init(
        ctx: &mut Ctx<'_>,
        id: IkeSaId,
        local: SocketAddr,
        remote: SocketAddr,
        header: &Header,
        payloads: &[Payload],
        raw: &[u8],
    ) -> Option<Self> {
        let refuse = |ctx: &mut Ctx<'_>, kind, data| {
            refuse_init(ctx, local, remote, header, kind, data);
            None
        };
        let (Some(offered), Some(ke), Some(ni)) = (
            find_payload!(payloads, Payload::Sa),
            find_payload!(payloads, Payload::Ke),
            find_payload!(payloads, Payload::Nonce),
        ) else {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        };
        if !(16..=256).contains(&ni.len()) {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        }
        let supported = ctx.ike_suites();
        let Some((suite, chosen)) = proposal::choose_ike(&supported, offered) else {
            return refuse(ctx, NotifyType::NO_PROPOSAL_CHOSEN, Vec::new());
        };
        if ke.group != suite.dh {
            return refuse(
                ctx,
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.0.to_be_bytes().to_vec(),
            );
        }
        let spi_r = random_u64().ok()?;
        let mut sa = Self::blank(
            id,
            false,
            header.spi_i,
            spi_r,
            local,
            remote,
            suite,
            ctx.now,
        );
        sa.phase = Phase::HalfOpen;
        sa.init_key = Some((remote, header.spi_i));
        sa.ni = ni.clone();
        sa.nr = random_bytes(NONCE_LEN).ok()?;
        sa.init_messages.get_or_insert_default().theirs = raw.to_vec();
        sa.peer_fragmentation = has_notify(payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED);
        // The request's hashes were made with a zero responder SPI (RFC 7296 §2.23).
        sa.udp_encap = ctx.config.force_nat_t || sa.nat_detected(payloads, 0);
        let (dh, public) = dh_generate(suite.dh).ok()?;
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return refuse(ctx, NotifyType::INVALID_SYNTAX, Vec::new());
        };
        let x = Exchanged {
            shared: &shared,
            ni: &sa.ni,
            nr: &sa.nr,
            spi_i: sa.spi_i,
            spi_r,
        };
        sa.keys = Some(IkeKeys::derive(&suite, &x, None, false, ctx.config.log_keys).ok()?);
        let mut out = vec![
            Payload::Sa(vec![proposal::ike_answer(&suite, chosen, Vec::new())]),
            Payload::Ke(KeyExchange {
                group: suite.dh,
                data: public,
            }),
            Payload::Nonce(sa.nr.clone()),
        ];
        out.extend(sa.init_notifies(ctx, spi_r));
        if let Some(anchors) = ctx.policy.certificate_request(remote) {
            out.push(Payload::CertReq(Certificate {
                encoding: CertEncoding::X509_SIGNATURE,
                data: anchors.certreq_data(),
            }));
        }
        let reply = plain(sa.header(ExchangeType::IKE_SA_INIT, true, 0), out)?;
        sa.init_messages.get_or_insert_default().ours = reply.clone();
        let reply = with_marker(sa.nat_t, reply);
        sa.transmit(ctx, std::slice::from_ref(&reply));
        sa.responses.answered(0, CachedResponse::Plain(vec![reply]));
        Some(sa)
    }

    pub(super) fn on_init_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        header: &Header,
        payloads: &[Payload],
        raw: &[u8],
        attempt: InitAttempt,
    ) {
        let InitAttempt {
            dh,
            cookie,
            retries,
        } = attempt;
        if let Some(c) = find_notify(payloads, NotifyType::COOKIE) {
            if retries < MAX_INIT_RETRIES && !c.data.is_empty() && c.data.len() <= 64 {
                // The same KE value may be sent again: the responder kept no state.
                return match dh_generate(dh.group().id()) {
                    Ok((d, p)) => self.send_init(ctx, d, p, Some(c.data.clone()), retries + 1),
                    Err(e) => self.down(ctx, DownReason::Local(e.to_string())),
                };
            }
            return self.down(ctx, DownReason::Refused(NotifyType::COOKIE));
        }
        if let Some(n) = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD) {
            let group = n
                .data
                .get(..2)
                .map(|g| DhId(u16::from_be_bytes([g[0], g[1]])));
            let ours = |g: DhId| ctx.suites.ike.iter().any(|s| s.dh == g);
            match group {
                Some(g) if ours(g) && g != dh.group().id() && retries < MAX_INIT_RETRIES => {
                    debug!(sa = ?self.id, group = ?g, "responder wants another group");
                    match dh_generate(g) {
                        Ok((d, p)) => self.send_init(ctx, d, p, cookie, retries + 1),
                        Err(e) => self.down(ctx, DownReason::Local(e.to_string())),
                    }
                }
                _ => self.down(ctx, DownReason::Refused(NotifyType::INVALID_KE_PAYLOAD)),
            }
            return;
        }
        if let Some(kind) = error_notify(payloads) {
            return self.down(ctx, DownReason::Refused(kind));
        }
        let answer = find_payload!(payloads, Payload::Sa).map(Vec::as_slice);
        let ke = find_payload!(payloads, Payload::Ke);
        let nr = find_payload!(payloads, Payload::Nonce);
        let (Some(answer), Some(ke), Some(nr)) = (answer, ke, nr) else {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        };
        let Some(suite) = proposal::accepted_ike(&ctx.suites.ike, answer) else {
            return self.down(ctx, DownReason::Refused(NotifyType::NO_PROPOSAL_CHOSEN));
        };
        if ke.group != suite.dh || dh.group().id() != suite.dh || header.spi_r == 0 {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        }
        let Ok(shared) = dh.shared_secret(&ke.data) else {
            return self.down(ctx, DownReason::Refused(NotifyType::INVALID_SYNTAX));
        };
        self.spi_r = header.spi_r;
        self.suite = suite;
        self.nr = nr.clone();
        self.init_messages.get_or_insert_default().theirs = raw.to_vec();
        self.peer_fragmentation = has_notify(payloads, NotifyType::IKEV2_FRAGMENTATION_SUPPORTED);
        let x = Exchanged {
            shared: &shared,
            ni: &self.ni,
            nr: &self.nr,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
        };
        match IkeKeys::derive(&suite, &x, None, true, ctx.config.log_keys) {
            Ok(k) => self.keys = Some(k),
            Err(e) => return self.down(ctx, DownReason::Local(e.to_string())),
        }
        self.udp_encap = ctx.config.force_nat_t || self.nat_detected(payloads, header.spi_r);
        if self.udp_encap && !self.nat_t {
            self.float_to_nat_t();
        }
        self.send_auth(ctx);
    }
}

/// Refuses an IKE_SA_INIT request statelessly with one notification.
pub(in crate::sa) fn refuse_init(
    ctx: &mut Ctx<'_>,
    local: SocketAddr,
    remote: SocketAddr,
    header: &Header,
    kind: NotifyType,
    data: Vec<u8>,
) {
    let reply = Header {
        spi_r: 0,
        initiator: false,
        response: true,
        ..*header
    };
    if let Some(d) = plain(reply, vec![notify(kind, data)]) {
        ctx.transmits.push_back(Transmit {
            local,
            remote,
            payload: with_marker(crate::sa::exchange::on_nat_t_port(local, remote), d),
        });
    }
}
