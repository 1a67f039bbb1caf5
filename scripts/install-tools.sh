#!/usr/bin/env bash
# Install the Debian tools the tests (and, with BENCH_TOOLS=1, the
# benchmarks) drive, when they are missing. Needs root or sudo for apt-get.
set -euo pipefail

declare -A want=(
  [curl]=curl
  [openssl]=openssl
  [ssh-keyscan]=openssh-client
  [sshd]=openssh-server
  [nc]=netcat-openbsd
  [haproxy]=haproxy      # tests/unit/test_proxy_protocol.py; also a benchmark target
  [nginx]=nginx-light    # a PROXY protocol consumer in the tests; the connections/s backend
  [tshark]=tshark        # tests/unit/test_pcap.py reads the captures back
  [dig]=dnsutils         # DNS through the proxy (UDP and TCP), and the dns probe's captures
  [logger]=bsdutils      # syslog messages for the syslog probe
  [systemd-analyze]=systemd   # packaging/*.service and *.socket verified as systemd loads them
  [ip]=iproute2         # tests/e2e/test_transparent_e2e.py: network namespaces, policy routing
  [nft]=nftables        # ...and the mark on replies to transparent sockets
  [chromium]=chromium   # tests/e2e/test_dashboard_e2e.py drives the admin dashboard
  [chromedriver]=chromium-driver  # ...through Selenium
  [redis-server]=redis-server  # tests/e2e/test_fleet_e2e.py: bans and allows across instances
)
if [[ "${BENCH_TOOLS:-}" == 1 ]]; then
  want[sslh]=sslh
  want[wrk]=wrk          # the connections/s client
fi

missing=()
for cmd in "${!want[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$cmd" ]]; then
    missing+=("${want[$cmd]}")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
