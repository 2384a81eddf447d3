#!/usr/bin/env bash
# A local wiremesh: one coordinator and three agents, each "host" its own
# network namespace. The coordinator (with its relay) and host3 sit on an
# "internet" (a bridge in a switch namespace, 203.0.113.0/24); host1 is
# behind an easy NAT (a router namespace running nftables masquerade) and
# host2 behind a hard one (masquerade random), each on its own LAN
# (192.0.2.0/27, 192.0.2.32/27). So host2 reaches host3 directly and host1
# only through the relay. The admin UI is forwarded to
# https://localhost:$DEMO_UI_PORT/ui/ (default 8443; 0: not forwarded).
# Documentation ranges only; nothing leaves the machine.
#
#   demo.sh [BIN]            run until Ctrl-C, then remove everything
#   demo.sh --detach [BIN]   set up, print the commands to try and exit,
#                            leaving the mesh running
#   demo.sh --cleanup        remove a detached demo
#
# DEMO_PREFIX (default wmdemo) names the namespaces ($DEMO_PREFIX-coord,
# -host1...) and the WireGuard interfaces ($DEMO_PREFIX1...); DEMO_DIR
# (default /run/wiremesh-demo-$DEMO_PREFIX) holds the logs, keys and state.
# Give both to --cleanup as to the run.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
mode=run
case "${1:-}" in
--detach) mode=detach; shift ;;
--cleanup) mode=cleanup; shift ;;
esac
p=${DEMO_PREFIX:-wmdemo}
[[ $p =~ ^[a-z][a-z0-9]{0,13}$ ]] || { echo "demo: DEMO_PREFIX $p: want a lower-case letter and at most 13 more letters or digits" >&2; exit 1; }
dir=${DEMO_DIR:-/run/wiremesh-demo-$p}
namespaces=($p-sw $p-coord $p-nat1 $p-nat2 $p-host1 $p-host2 $p-host3)
uiport=${DEMO_UI_PORT:-8443}
[[ $uiport =~ ^[0-9]+$ ]] || { echo "demo: DEMO_UI_PORT $uiport: want a port number, or 0 for none" >&2; exit 1; }

# stop ends the processes in the demo's namespaces (SIGTERM, so that the
# agents remove their interfaces; SIGKILL after 5 s), deletes the namespaces
# (and with them the links) and the demo's directory.
stop() {
	local ns pids=()
	for ns in "${namespaces[@]}"; do
		[ -e "/run/netns/$ns" ] && pids+=($(ip netns pids "$ns"))
	done
	[ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true # reaps our children; others are polled
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [ -e "$dir/ui-forward.pid" ]; then
		kill "$(cat "$dir/ui-forward.pid")" 2>/dev/null || true
	fi
	for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
	if [ -e "$dir/.wiremesh-demo" ]; then rm -rf "$dir"; fi
}

if [ $mode = cleanup ]; then
	stop
	echo "demo: removed namespaces $p-*, their processes and $dir"
	exit 0
fi
bin=$(realpath "${1:-bin/wiremesh}")

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v wg >/dev/null || need+=(wireguard-tools)
command -v dig >/dev/null || need+=(dnsutils)
command -v nft >/dev/null || need+=(nftables)
[ "$uiport" = 0 ] || command -v socat >/dev/null || need+=(socat)
if [ ${#need[@]} -gt 0 ]; then
	echo "demo: installing ${need[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# cleanup [CODE]: stop and exit with CODE (default: the status of the
# command that failed).
cleanup() {
	local code=${1:-$?}
	trap - EXIT INT TERM
	echo
	echo "demo: stopping"
	stop
	echo "demo: removed namespaces $p-*, their processes and $dir"
	exit "$code"
}
trap cleanup EXIT
trap 'cleanup 0' INT TERM
stop # what a previous demo killed hard left behind
mkdir -m 700 "$dir" # fails if a directory not made by the demo is there
touch "$dir/.wiremesh-demo"

# waitfor DESCRIPTION COMMAND...: run COMMAND until it succeeds, for at most
# 20 s; then give up.
waitfor() {
	local what=$1
	shift
	for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "demo: timed out waiting for $what; the logs:" >&2
	tail -n 20 "$dir"/*.log >&2
	exit 1
}

for ns in "${namespaces[@]}"; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
# The internet: the coordinator, host3 and the two routers' uplinks.
ip -n $p-sw link add br0 type bridge
ip -n $p-sw link set br0 up
plug() { # plug NS IFACE ADDR/LEN N: a veth from NS to the internet bridge
	ip link add "$2" netns "$1" type veth peer name v$4 netns $p-sw
	ip -n $p-sw link set v$4 master br0 up
	ip -n "$1" addr add "$3" dev "$2"
	ip -n "$1" link set "$2" up
}
plug $p-coord eth0 203.0.113.1/24 1
plug $p-host3 eth0 203.0.113.3/24 3
# site N WAN ROUTER HOST MASQUERADE: a router with its uplink on the
# internet at WAN and a /27 LAN (ROUTER, HOST) to hostN, masquerading what
# leaves and letting in only replies.
site() {
	local r=$p-nat$1 h=$p-host$1
	plug $r wan "$2/24" 1$1
	ip link add lan netns $r type veth peer name eth0 netns $h
	ip -n $r addr add "$3/27" dev lan
	ip -n $r link set lan up
	ip -n $h addr add "$4/27" dev eth0
	ip -n $h link set eth0 up
	ip -n $h route add default via "$3"
	ip netns exec $r sysctl -qw net.ipv4.ip_forward=1
	ip netns exec $r nft -f - <<NFT
table ip demo {
	chain postrouting { type nat hook postrouting priority srcnat; oifname "wan" $5; }
	chain forward { type filter hook forward priority filter; iifname "wan" ct state established,related accept; iifname "wan" drop; }
}
NFT
}
site 1 203.0.113.11 192.0.2.1 192.0.2.2 "masquerade"                           # easy: one mapping per socket
site 2 203.0.113.12 192.0.2.33 192.0.2.34 "meta l4proto { tcp, udp } masquerade random; oifname \"wan\" masquerade" # hard: a new port per destination

pids=()
echo "demo: starting the coordinator on $p-coord (203.0.113.1:8443, with a relay named demo-relay)"
ip netns exec $p-coord "$bin" coordinator --data-dir "$dir/coord" --listen 203.0.113.1:8443 --relay-name demo-relay \
	>"$dir/coordinator.log" 2>&1 &
pids+=($!)
waitfor "the coordinator" grep -q "coordinator listening" "$dir/coordinator.log"
if [ "$uiport" != 0 ]; then
	# The admin UI, for this machine's browser: a forwarder on localhost
	# into the coordinator's namespace (its certificate names localhost).
	socat TCP-LISTEN:"$uiport",bind=127.0.0.1,reuseaddr,fork \
		"EXEC:ip netns exec $p-coord socat STDIO TCP\:203.0.113.1\:8443" >"$dir/ui-forward.log" 2>&1 &
	echo $! >"$dir/ui-forward.pid"
	waitfor "the UI on localhost:$uiport" curl -sf --cacert "$dir/coord/ca.crt" -o /dev/null "https://localhost:$uiport/ui/login"
fi
admin=(--token-file "$dir/coord/admin.token")
policy=$(realpath "$(dirname "$0")/../examples/demo-policy.hujson")
ip netns exec $p-coord "$bin" acl set "$policy" "${admin[@]}" >/dev/null
tags=(x tag:web tag:api tag:db)
# Each tier runs its service; the api reports in through a ttl check.
mkdir -p "$dir/etc"
echo '{"services": [{"name": "web", "port": 80}]}' >"$dir/etc/host1.hujson"
echo '{"services": [{"name": "api", "port": 8080, "tags": ["v1"], "checks": [{"id": "api-ttl", "ttl": "1h"}]}]}' >"$dir/etc/host2.hujson"
echo '{"services": [{"name": "db", "port": 5432}]}' >"$dir/etc/host3.hujson"

for n in 1 2 3; do
	# The join key goes in a file, not on the command line (ps shows that).
	(umask 077; ip netns exec $p-coord "$bin" keys create --tag "${tags[$n]}" "${admin[@]}" >"$dir/etc/host$n.key")
	# The hosts have no way out of the demo: nothing to forward DNS to.
	ip netns exec $p-host$n "$bin" agent --join-file "$dir/etc/host$n.key" --state-dir "$dir/host$n" --name host$n \
		--interface $p$n --config "$dir/etc/host$n.hujson" --resolv-conf /dev/null >"$dir/host$n.log" 2>&1 &
	pids+=($!)
done
for n in 1 2 3; do
	waitfor "host$n's agent" grep -q "agent up" "$dir/host$n.log"
done
# host1 → host2 and host2 → host3 are allowed: wait until their paths work.
waitfor "host1 to reach host2" ip netns exec $p-host1 "$bin" ping host2 --count 1 --state-dir "$dir/host1"
waitfor "host2 to reach host3" ip netns exec $p-host2 "$bin" ping host3 --count 1 --state-dir "$dir/host2"
# host3 is public: host2's probes find it, and WireGuard goes there directly.
direct_to_host3() { ip netns exec $p-host2 wg show ${p}2 endpoints | grep -q '203\.0\.113\.3:'; }
waitfor "host2's direct path to host3" direct_to_host3
ip netns exec $p-coord "$bin" nodes list "${admin[@]}"
addr() { ip netns exec $p-coord "$bin" nodes list --json "${admin[@]}" | grep -A3 "\"name\": \"$1\"" | grep -o '100\.[0-9.]*' | head -1; }
a2=$(addr host2)
a3=$(addr host3)
echo
echo "demo: policy $policy: host1 (tag:web) → host2 (tag:api) → host3 (tag:db)"
echo "demo: host1 → host2, allowed:"
ip netns exec $p-host1 ping -c 3 -i 0.2 "$a2" | tail -2
echo "demo: host2 → host3, allowed:"
ip netns exec $p-host2 ping -c 3 -i 0.2 "$a3" | tail -2
echo "demo: host1 → host3, denied (web may not reach db; they are not even peers):"
ip netns exec $p-host1 ping -c 2 -W 1 "$a3" | tail -2 || true
echo "demo: host2 → host1, denied (the api may not open flows to web):"
ip netns exec $p-host2 ping -c 2 -W 1 "$(addr host1)" | tail -2 || true
echo
echo "demo: DNS on host1: the api is critical until it reports in, so no answer yet:"
ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal
ip netns exec $p-host2 "$bin" checks pass api-ttl --state-dir "$dir/host2"
api_answers() { [ -n "$(ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal)" ]; }
waitfor "host1 to learn that the api passes" api_answers
echo "demo: the api reported in (wiremesh checks pass api-ttl); host1 asks again:"
ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal
ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal SRV
echo "demo: host1 may not reach db, so for host1 it does not exist; host2 finds it:"
ip netns exec $p-host1 dig @127.0.0.1 db.service.mesh.internal | grep -o 'status: [A-Z]*'
ip netns exec $p-host2 dig +short @127.0.0.1 db.service.mesh.internal
echo
ip netns exec $p-coord "$bin" services list "${admin[@]}"
echo
echo "demo: how host2 (behind a hard NAT) reaches its peers: host3 (public) directly,"
echo "demo: host1 (behind another NAT) only through the relay:"
ip netns exec $p-host2 "$bin" status --state-dir "$dir/host2"
ui="The admin UI is not forwarded (DEMO_UI_PORT=0)."
uihint=
if [ "$uiport" != 0 ]; then
	ui="The admin UI: https://localhost:$uiport/ui/ (mesh map: /ui/map). Log in with the token in
$dir/coord/admin.token; make your browser trust $dir/coord/ca.crt first (docs/ui.md)."
	uihint="curl -sf --cacert $dir/coord/ca.crt -o /dev/null https://localhost:$uiport/ui/login   # the UI answers"
fi
# The commands to try; TestDemoHints (test/e2e/demo_test.go) runs each.
cat <<MSG

The mesh is up. Try, in another shell (as root):

  ip netns exec $p-host1 ping -c 3 $a2                      # host1 → host2 over WireGuard
  ip netns exec $p-host2 $bin status --state-dir $dir/host2
  ip netns exec $p-host2 wg show ${p}2                           # the WireGuard side
  ip netns exec $p-host1 $bin ping host2 --state-dir $dir/host1   # which path answers, and why not direct
  export WIREMESH_TOKEN_FILE=$dir/coord/admin.token
  ip netns exec $p-coord $bin nodes list
  ip netns exec $p-coord $bin acl get
  ip netns exec $p-coord $bin acl check $policy   # what a change to a copy would do
  ip netns exec $p-coord $bin nodes tag host3 tag:db tag:api  # host1 may now reach host3
  ip netns exec $p-coord $bin nodes delete host3
  ip netns exec $p-host1 dig @127.0.0.1 _api._v1.service.mesh.internal SRV
  ip netns exec $p-host2 $bin checks fail api-ttl --state-dir $dir/host2   # gone from host1's answers
  ip netns exec $p-coord $bin services list
  $uihint

$ui
Logs are in $dir/*.log.
MSG
if [ $mode = detach ]; then
	trap - EXIT INT TERM
	echo "Remove it with: DEMO_PREFIX=$p DEMO_DIR=$dir $0 --cleanup"
	exit 0
fi
echo "Press Ctrl-C to stop and remove everything."
# Agents may exit (nodes delete does that); the coordinator should not.
wait "${pids[0]}" || true
echo "demo: the coordinator exited unexpectedly; its log:" >&2
tail -n 20 "$dir/coordinator.log" >&2
cleanup 1
