# Shared by demo-net.sh and bench-net.sh (sourced): start nodes on 127.0.0.1 as separate
# processes and form a network through the CLI, as a coordinator and clinics would.
# Needs $bin and $work. Defines init_node, admit_node, start_node, wait_peers, form_network,
# stop_all.
pids=()
# Below Linux's ephemeral range (32768 up), which outgoing connections and port-0 binds draw
# from: a node's port taken between init and start would stop it (net::port in the node).
port_base=$((20000 + RANDOM % 12000))

# init_node NAME -> prints the data dir; listens on port_base + the number of nodes so far
# (counted from the directories, since this runs in a command substitution's subshell)
init_node() {
    local dir="$work/$(echo "$1" | tr ' A-Z' '-a-z')"
    local port=$((port_base + $(find "$work" -mindepth 1 -maxdepth 1 -type d | wc -l)))
    "$bin" init --data-dir "$dir" --name "$1" --listen "/ip4/127.0.0.1/tcp/$port" >/dev/null
    echo "$dir"
}

# admit_node COORD_DIR CLINIC_DIR NETWORK_ID
admit_node() {
    "$bin" network join-request --data-dir "$2" --network-id "$3" --out "$2.join.json" >/dev/null
    "$bin" network admit --data-dir "$1" "$2.join.json" --out "$2.roster.json" >/dev/null
    "$bin" network join --data-dir "$2" --roster "$2.roster.json" \
        --coordinator "$("$bin" network roster --data-dir "$1" --json | sed 's/.*"coordinator":"\([^"]*\)".*/\1/')" >/dev/null
}

# start_node DIR: runs the daemon in the background and waits for its ready line
start_node() {
    "$bin" run --data-dir "$1" >"$1.out" 2>"$1.log" &
    pids+=($!)
    for _ in $(seq 1 300); do
        [ -s "$1.out" ] && return 0
        sleep 0.1
    done
    echo "node $1 did not start:" >&2; cat "$1.log" >&2; return 1
}

# wait_peers DIR N: until the node reports N connected peers
wait_peers() {
    for _ in $(seq 1 600); do
        n=$("$bin" status --data-dir "$1" --json 2>/dev/null | sed -n 's/.*"peers_connected": \([0-9]*\).*/\1/p')
        [ "${n:-0}" -ge "$2" ] && return 0
        sleep 0.1
    done
    echo "node $1 did not reach $2 peers" >&2; return 1
}

# form_network NODES NETWORK_ID: a coordinator and NODES - 1 clinics, admitted, started and
# fully connected; their data dirs in the array `dirs` (coordinator first)
form_network() {
    local coord d i
    coord=$(init_node "Coordinator")
    "$bin" network create --data-dir "$coord" --network-id "$2" >/dev/null
    dirs=("$coord")
    for i in $(seq 2 "$1"); do
        d=$(init_node "Clinic $i")
        admit_node "$coord" "$d" "$2"
        dirs+=("$d")
    done
    for d in "${dirs[@]}"; do start_node "$d"; done
    for d in "${dirs[@]}"; do wait_peers "$d" $(($1 - 1)); done
}

stop_all() {
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
