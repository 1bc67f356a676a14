#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the grid needs, only those missing.
#   scripts/system-packages.sh demo   Tesseract (fra, eng, nld), poppler, Redis and PostgreSQL
#   scripts/system-packages.sh test   the same (the demo and the tests start private servers)
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
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing system packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
