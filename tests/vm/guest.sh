#!/bin/sh
# Runs inside the VM (host userspace, guest kernel): load the data-plane modules, then the
# scenarios binary named by the first argument.
set -u
echo "guest kernel: $(uname -r)"
for m in veth tun tunnel4 ip_tunnel ipip tunnel6 ip6_tunnel xfrm_user esp4 esp4_offload esp6 esp6_offload chacha20poly1305 chacha-x86_64 \
         poly1305-x86_64 gcm aesni-intel seqiv; do
    modprobe "$m" 2>/dev/null || echo "note: modprobe $m failed"
done
exec "$1"
