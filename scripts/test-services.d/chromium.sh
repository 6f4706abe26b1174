# Chromium (Debian's) and a font for the page's text, for the report tests: they drive it headless
# through Playwright's Python package (tests/integration/test_report.py; no browser download).
# Sourced by scripts/test-services, which defines apt_install. Idempotent: installs only what is missing.
if ! command -v chromium >/dev/null || [ ! -d /usr/share/fonts/truetype/dejavu ]; then
  apt_install --no-install-recommends chromium fonts-dejavu-core
fi
