//! INFORMATIONAL (RFC 7296 §1.4): deleting child SAs and the IKE SA, and the initiator's
//! late AUTHENTICATION_FAILED.

use super::*;

impl IkeSa {
    pub(super) fn start_delete_children(&mut self, ctx: &mut Ctx<'_>, spis: Vec<ChildSpis>) {
        for c in &mut self.children {
            if spis.contains(&c.sa.spis) && c.state == ChildState::Installed {
                c.state = ChildState::Deleting;
            }
        }
        let inner = vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis: spis.iter().map(|s| s.inbound).collect(),
        })];
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &inner,
            Pending::DeleteChildren(spis),
        );
    }

    /// Removes a child and says why: an old SA of a rekey is retired, others deleted.
    pub(super) fn remove_child(&mut self, ctx: &mut Ctx<'_>, spis: ChildSpis) {
        let Some(at) = self.children.iter().position(|c| c.sa.spis == spis) else {
            return;
        };
        let child = self.children.remove(at);
        if !child.announced {
            return;
        }
        ctx.events.push_back(if child.state == ChildState::Rekeyed {
            Event::ChildSaRetired {
                ike_sa: self.id,
                spis,
            }
        } else {
            Event::ChildSaDeleted {
                ike_sa: self.id,
                spis,
            }
        });
    }

    pub(super) fn on_informational_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        payloads: &[Payload],
    ) -> Vec<Payload> {
        if has_notify(payloads, NotifyType::AUTHENTICATION_FAILED) {
            // The initiator rejected our AUTH after we had accepted its own
            // (RFC 7296 §2.21.2): the IKE SA and its first child were never valid.
            self.down(ctx, DownReason::AuthFailed);
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            if d.protocol == ProtocolId::IKE {
                self.deleted_by_peer(ctx);
                return Vec::new();
            }
            if d.protocol != ProtocolId::ESP {
                continue;
            }
            let mut ours = Vec::new();
            for spi in &d.spis {
                let Some(child) = self
                    .children
                    .iter_mut()
                    .find(|c| c.sa.spis.outbound == *spi)
                else {
                    continue;
                };
                let spis = child.sa.spis;
                let state = child.state;
                if let Some((theirs, _)) = child.collision.take().map(|b| *b) {
                    // The peer's rekey won before it saw ours (§2.8.1): it deletes the old.
                    self.replace_child(ctx, spis, theirs, false);
                }
                // A child we are deleting ourselves is answered without its SPI
                // (RFC 7296 §1.4.1, simultaneous deletes).
                if state != ChildState::Deleting {
                    ours.push(spis.inbound);
                }
                self.remove_child(ctx, spis);
            }
            if !ours.is_empty() {
                out.push(Payload::Delete(Delete {
                    protocol: ProtocolId::ESP,
                    spis: ours,
                }));
            }
        }
        out
    }

    pub(super) fn deleted_by_peer(&mut self, ctx: &mut Ctx<'_>) {
        if let Some((theirs, _)) = self.ike_collision.take().map(|b| *b) {
            // The peer won the rekey collision and deleted this, the old SA.
            self.hand_over(ctx, theirs);
        }
        self.down(ctx, DownReason::DeletedByPeer);
    }
}
