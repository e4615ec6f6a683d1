#!/bin/sh
# Runs inside the VM (host userspace, guest kernel): loads the data-plane modules, runs the
# scenarios binary named by the first argument (unless it is empty), then every test binary
# listed in the file named by the second argument, one `<name> <binary> <args…>` a line,
# with the kernel data plane. Exits non-zero if anything failed.
set -u
echo "guest kernel: $(uname -r)"
for m in veth tun tunnel4 ip_tunnel ipip sit tunnel6 ip6_tunnel xfrm_user esp4 esp4_offload esp6 esp6_offload chacha20poly1305 chacha-x86_64 \
         poly1305-x86_64 gcm aesni-intel seqiv; do
    modprobe "$m" 2>/dev/null || echo "note: modprobe $m failed"
done
# Tests that serve on 127.0.0.1 in the guest's own namespace (the enrollment server) need lo.
ip link set lo up
rc=0
failed=""
timed() {
    name=$1
    shift
    t0=$(date +%s)
    echo "=== $name"
    if "$@"; then
        echo "=== $name: ok ($(($(date +%s) - t0)) s)"
    else
        echo "=== $name: FAILED ($(($(date +%s) - t0)) s)"
        rc=1
        failed="$failed $name"
    fi
}
if [ -n "$1" ]; then
    timed vm_scenarios "$1"
fi
# The tests read the data plane of their daemons from this variable (testkit/src/iiptrand.rs),
# and stretch their convergence deadlines by the time scale (testkit/src/wait.rs): the
# emulated CPUs run them several times slower than the host.
export IIPTRAN_TEST_DATAPLANE=kernel IIPTRAN_TEST_TIME_SCALE=4 RUST_BACKTRACE=1
while read -r name binary args; do
    # shellcheck disable=SC2086 # the arguments are words
    timed "$name" "$binary" $args </dev/null
done <"$2"
[ $rc -eq 0 ] || echo "guest: failed:$failed"
exit $rc
