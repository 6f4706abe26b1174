# Prometheus (prometheus, promtool), Alertmanager (prometheus-alertmanager, amtool) and
# docker-compose (v1: validates compose.yaml without an engine) for the observability tests.
# Sourced by scripts/test-services, which defines apt_install. Idempotent: installs only what is missing, so it
# costs nothing on a machine that has them. No recommends: they would pull a container engine.
_observability_missing=()
command -v prometheus >/dev/null || _observability_missing+=(prometheus)
command -v promtool >/dev/null || _observability_missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || _observability_missing+=(prometheus-alertmanager)
command -v amtool >/dev/null || _observability_missing+=(prometheus-alertmanager)
command -v docker-compose >/dev/null || _observability_missing+=(docker-compose)
if [ "${#_observability_missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2046  # one word per package
  apt_install --no-install-recommends $(printf '%s\n' "${_observability_missing[@]}" | sort -u)
fi
unset _observability_missing
