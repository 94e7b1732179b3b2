#!/usr/bin/env bash
# Installs the system tools the local stack needs (JRE 17+, Maven, PostgreSQL server binaries) and the
# tests need (promtool and the Prometheus server, from Debian's prometheus package; Chromium and its
# WebDriver for the console's browser tests), only when missing.
# Installs happen only as root on Debian/Ubuntu; elsewhere it prints what to install and fails.
# Tools for a component are not needed when that component is external (KAFKA_BOOTSTRAP_SERVERS /
# AOETL_POSTGRES_DSN), so those checks are skipped then.
set -euo pipefail

missing=()
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  # Maven only resolves the broker jars; an unpacked distribution in KAFKA_HOME makes it unnecessary.
  [[ -n "${KAFKA_HOME:-}" ]] || command -v mvn >/dev/null 2>&1 || missing+=(maven)
fi
if [[ -z "${AOETL_POSTGRES_DSN:-}" ]]; then
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
fi

# The alert rules' tests (promtool check/test rules) and the test that scrapes a service with a real server.
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
# The web console's browser tests and `make screenshots`: a headless Chromium driven by Selenium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if ((${#missing[@]})); then
  if [[ $EUID -eq 0 && -r /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Debian's package enables a system-wide Prometheus server; the tests start their own on loopback.
    if [[ " ${missing[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  else
    echo "bootstrap: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  # Kafka 4.x brokers need Java 17+.
  major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  if [[ "${major%%.*}" -lt 17 ]]; then
    echo "bootstrap: java ${major} found, Kafka ${KAFKA_VERSION:-4.x} needs 17+" >&2
    exit 1
  fi
fi
