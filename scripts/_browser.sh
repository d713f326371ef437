# Sourced by scripts/test: the web console's browser tests drive Debian's chromium and chromedriver (never a
# downloaded browser), with CJK fonts so Chinese pages render in their screenshots. Installed where missing
# when this runs as root with apt (CI does); elsewhere the browser tests skip unless DSBROKER_REQUIRE_BROWSER=1.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "installing chromium and chromium-driver for the console's browser tests (log: .venv/browser.log)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
        fonts-noto-cjk; } > .venv/browser.log 2>&1 || { tail -n 20 .venv/browser.log >&2; exit 1; }
  else
    echo "note: no /usr/bin/chromium: the console's browser tests will skip (apt-get install chromium" \
         "chromium-driver fonts-noto-cjk as root)" >&2
  fi
fi
