#!/usr/bin/env bash
# Installs the build tools a fresh machine lacks: Gradle from Debian's packages (4.4.1 on Debian 12; the
# build scripts also run on current Gradle). Java 17, Rust, Go, Python and Maven come with the machine.
set -euo pipefail
need=()
command -v gradle >/dev/null 2>&1 || need+=(gradle)
if [[ ${#need[@]} -gt 0 ]]; then
  echo "[install-build-tools] apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in java javac cargo go python3 mvn gradle; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[install-build-tools] ERROR: $tool not found on PATH" >&2; exit 1; }
done
echo "[install-build-tools] ok: $(gradle --version 2>/dev/null | grep -m1 '^Gradle'), $(cargo --version), $(java -version 2>&1 | head -1)"
