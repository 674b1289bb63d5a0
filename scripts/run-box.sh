#!/usr/bin/env bash
# `make box`: the daemon alone on this machine with the example config and embedded defaults.
# As root it runs the daemon inside a network namespace of its own ("storebox-run"), so the
# host's routes and interfaces are never touched; without root it runs with route control off.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
run=$top/run
mkdir -p "$run/state"
chmod 700 "$run" "$run/state"
[ -s "$run/pos-tokens" ] || { umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$run/pos-tokens"; }
[ -s "$run/merchant-key" ] || { umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$run/merchant-key"; }
sed -e "s#^state_dir = .*#state_dir = \"$run/state\"#" \
    -e "s#^tokens_file = .*#tokens_file = \"$run/pos-tokens\"#" \
    -e "s#^admin_socket = .*#admin_socket = \"$run/api.sock\"#" \
    -e "s#^merchant_key_file = .*#merchant_key_file = \"$run/merchant-key\"#" \
    -e "s#^listen = .*#listen = \"127.0.0.1:8470\"#" \
    -e "s#^backend = .*#backend = \"none\"#" \
    -e "s#^simulator = .*#simulator = \"SKT\"#" \
    -e "s#^gateway_url = .*#gateway_url = \"http://127.0.0.1:8443\"#" \
    -e "s#^allow_insecure_gateway = .*#allow_insecure_gateway = true#" \
    firmware/data/example.toml > "$run/storebox.toml"
.venv/bin/storebox config check --config "$run/storebox.toml"

cat <<MSG

  storebox is starting with $run/storebox.toml
  In another terminal, look at the box with:

      $top/.venv/bin/storebox status --config $run/storebox.toml

  (add --json for the status document). The LTE modem is the built-in EC25 simulator
  (SKT SIM); the payment gateway is the simulator on 127.0.0.1:8443. Take a payment:

      ip netns exec storebox-run curl -s -H "Authorization: Bearer \$(cat $run/pos-tokens)" \\
        -H "Idempotency-Key: demo-1" http://127.0.0.1:8470/v1/payments \\
        -d '{"amount": 12500, "currency": "KRW", "card": {"pan": "4111111111111111",
             "exp_month": 12, "exp_year": 2030, "cvc": "123"}}'

  Ctrl-C stops it.

MSG

if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  ns=storebox-run
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
  ip -n "$ns" link set lo up
  ip netns exec "$ns" "$top/.venv/bin/python" -m lab.gateway_sim \
      --listen 127.0.0.1:8443 --merchant-key-file "$run/merchant-key" &
  gateway=$!
  trap 'kill $gateway 2>/dev/null; ip netns del "$ns" 2>/dev/null || true' EXIT
  ip netns exec "$ns" "$top/.venv/bin/storebox" run --config "$run/storebox.toml"
else
  echo "not root: running without a network namespace and with route control off"
  "$top/.venv/bin/python" -m lab.gateway_sim \
      --listen 127.0.0.1:8443 --merchant-key-file "$run/merchant-key" &
  gateway=$!
  trap 'kill $gateway 2>/dev/null' EXIT
  "$top/.venv/bin/storebox" run --config "$run/storebox.toml"
fi
