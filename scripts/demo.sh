#!/usr/bin/env bash
# A local wiremesh: one coordinator and three agents, each "host" its own
# network namespace wired to a bridge in a switch namespace. Nothing leaves
# the machine. Runs until Ctrl-C, then removes everything it created.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
bin=$(realpath "${1:-bin/wiremesh}")

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v wg >/dev/null || need+=(wireguard-tools)
command -v dig >/dev/null || need+=(dnsutils)
if [ ${#need[@]} -gt 0 ]; then
	echo "demo: installing ${need[*]}"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

p=wmdemo
dir=$(mktemp -d /tmp/wiremesh-demo.XXXXXX)
pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "demo: stopping"
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	for ns in $p-sw $p-coord $p-host1 $p-host2 $p-host3; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$dir"
	echo "demo: removed namespaces $p-*, processes and $dir"
	exit "${1:-0}"
}
trap cleanup EXIT INT TERM

for ns in $p-sw $p-coord $p-host1 $p-host2 $p-host3; do
	ip netns del "$ns" 2>/dev/null || true # a previous demo killed hard
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
ip -n $p-sw link add br0 type bridge
ip -n $p-sw link set br0 up
i=1
for h in coord host1 host2 host3; do
	ip link add eth0 netns $p-$h type veth peer name v$i netns $p-sw
	ip -n $p-sw link set v$i master br0 up
	ip -n $p-$h addr add 10.99.0.$i/24 dev eth0
	ip -n $p-$h link set eth0 up
	i=$((i + 1))
done

echo "demo: starting the coordinator on $p-coord (10.99.0.1:8443)"
ip netns exec $p-coord "$bin" coordinator --data-dir "$dir/coord" --listen 10.99.0.1:8443 \
	>"$dir/coordinator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$dir/coord/admin.token" ] && grep -q "coordinator listening" "$dir/coordinator.log" && break; sleep 0.1; done
admin=(--token-file "$dir/coord/admin.token")
policy=$(dirname "$0")/../examples/demo-policy.hujson
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
		--interface wmdemo$n --config "$dir/etc/host$n.hujson" --resolv-conf /dev/null >"$dir/host$n.log" 2>&1 &
	pids+=($!)
done
for n in 1 2 3; do
	for _ in $(seq 100); do grep -q "agent up" "$dir/host$n.log" && break; sleep 0.1; done
done
sleep 0.5
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
sleep 0.5
echo "demo: the api reported in (wiremesh checks pass api-ttl); host1 asks again:"
ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal
ip netns exec $p-host1 dig +short @127.0.0.1 api.service.mesh.internal SRV
echo "demo: host1 may not reach db, so for host1 it does not exist; host2 finds it:"
ip netns exec $p-host1 dig @127.0.0.1 db.service.mesh.internal | grep -o 'status: [A-Z]*'
ip netns exec $p-host2 dig +short @127.0.0.1 db.service.mesh.internal
echo
ip netns exec $p-coord "$bin" services list "${admin[@]}"
cat <<MSG

The mesh is up. Try, in another shell (as root):

  ip netns exec $p-host1 ping $a2                      # host1 → host2 over WireGuard
  ip netns exec $p-host2 $bin status --state-dir $dir/host2
  wg show wmdemo2                                       # the WireGuard side
  export WIREMESH_TOKEN_FILE=$dir/coord/admin.token
  ip netns exec $p-coord $bin nodes list
  ip netns exec $p-coord $bin acl get
  ip netns exec $p-coord $bin acl check my-policy.hujson   # what a change would do
  ip netns exec $p-coord $bin nodes tag host3 tag:db tag:api  # host1 may now reach host3
  ip netns exec $p-coord $bin nodes delete host3
  ip netns exec $p-host1 dig @127.0.0.1 _api._v1.service.mesh.internal SRV
  ip netns exec $p-host2 $bin checks fail api-ttl --state-dir $dir/host2   # gone from host1's answers
  ip netns exec $p-coord $bin services list

Logs are in $dir/*.log. Press Ctrl-C to stop and remove everything.
MSG
wait -n "${pids[@]}" || true
echo "demo: a process exited unexpectedly; its log:" >&2
tail -n 20 "$dir"/*.log >&2
cleanup 1
