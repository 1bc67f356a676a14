#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the grid needs, only those missing.
#   scripts/system-packages.sh demo   Tesseract (fra, eng, nld), poppler, Redis and PostgreSQL
#   scripts/system-packages.sh test   the same (the demo and the tests start private servers),
#                                     promtool (Debian's prometheus) for the alert rules' tests, wrk
#                                     for the API latency benchmark, and
#                                     headless Chromium and its driver for the web pages' tests
set -euo pipefail
purpose=${1:-demo}

need=()
have() { command -v "$1" >/dev/null 2>&1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
have tesseract || need+=(tesseract-ocr)
for lang in fra eng nld; do
  [ -e "/usr/share/tesseract-ocr/5/tessdata/$lang.traineddata" ] \
    || [ -e "/usr/share/tesseract-ocr/4.00/tessdata/$lang.traineddata" ] \
    || need+=("tesseract-ocr-$lang")
done
have pdfinfo && have pdftoppm || need+=(poppler-utils)
# Both start servers of their own (app/servers.py): the packages' services are not used.
have redis-server || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || have initdb || need+=(postgresql)
# promtool checks and unit-tests deploy/prometheus (tests/test_monitoring.py); Debian ships it
# only in the server's package, whose service must not run here (below).
[ "$purpose" = test ] && ! have promtool && need+=(prometheus)
# wrk loads the API over HTTP at a fixed rate for the latency goal (bench/latency.py).
[ "$purpose" = test ] && ! have wrk && need+=(wrk)
# The web pages are tested in a real browser (tests/browser/): Chromium driven by Selenium.
if [ "$purpose" = test ]; then
  have chromium || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing system packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# A policy-rc.d answering 101 keeps the packages' services from starting during the install
# (a Prometheus server on :9090 is not wanted here); ours is removed after, an existing one kept.
policy=/usr/sbin/policy-rc.d
own_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  own_policy=1
fi
trap '[ -z "$own_policy" ] || $sudo rm -f "$policy"' EXIT
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# On a systemd machine the package still enables its unit for the next boot: disable it. (In a
# container without systemd there is no unit manager, and policy-rc.d kept it stopped.)
if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
