# Mosquitto (MQTT broker) for the MQTT bridge's integration tests (tests/integration/test_producers.py).
# Sourced by scripts/test-services, which defines apt_install. Idempotent and quick: an MQTT broker already
# listening on 127.0.0.1:1883 is used as it is. Otherwise mosquitto is installed if missing and
# started with the packaged config; if that does not give a listener on 1883 within 3 s, it is
# started on a free port with a temporary config, and TEST_MQTT_BROKER=127.0.0.1:PORT tells the tests.
_mqtt_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
_mqtt_wait() {
  for _ in $(seq 30); do _mqtt_listening "$1" && return 0; sleep 0.1; done
  return 1
}
if ! _mqtt_listening 1883; then
  command -v mosquitto >/dev/null || apt_install mosquitto
  _mqtt_started=
  if [ -r /etc/mosquitto/mosquitto.conf ]; then
    # The packaged config writes its pid and log under /run and /var/log as user mosquitto.
    mkdir -p /run/mosquitto /var/log/mosquitto /var/lib/mosquitto
    chown mosquitto: /run/mosquitto /var/log/mosquitto /var/lib/mosquitto 2>/dev/null || true
    mosquitto -d -c /etc/mosquitto/mosquitto.conf 2>/dev/null && _mqtt_wait 1883 && _mqtt_started=1
  fi
  if [ -z "$_mqtt_started" ]; then
    _mqtt_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    _mqtt_conf=$(mktemp /tmp/telemon-mosquitto.XXXXXX.conf)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$_mqtt_port" >"$_mqtt_conf"
    mosquitto -d -c "$_mqtt_conf"
    _mqtt_wait "$_mqtt_port" || { echo "mosquitto did not start on port $_mqtt_port" >&2; exit 1; }
    export TEST_MQTT_BROKER="127.0.0.1:$_mqtt_port"
    echo "mosquitto on $TEST_MQTT_BROKER"
  fi
  unset _mqtt_started _mqtt_port _mqtt_conf
fi
unset -f _mqtt_listening _mqtt_wait
