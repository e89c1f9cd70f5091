#!/usr/bin/env bash
# The course as a book.
#
#   bash notebooks-md/book.sh build   # -> target/book/index.html
#   bash notebooks-md/book.sh serve   # build, then read it at http://127.0.0.1:3000
#   bash notebooks-md/book.sh check   # build, then open every page in headless Chromium
#
# The pinned tools are installed once into .tools/ (git-ignored) with
# `cargo install --locked`; `check` also installs Debian's chromium and the CJK fonts
# (apt-get) and playwright-core (npm) to drive it. The book fetches nothing: the KaTeX
# stylesheet and fonts are in notebooks-md/katex/.
set -euo pipefail

MDBOOK_VERSION=0.5.4
MDBOOK_KATEX_VERSION=0.10.0 # renders with KaTeX 0.16.4, the version of notebooks-md/katex/
PLAYWRIGHT_CORE_VERSION=1.65.1

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BOOK_SRC="$REPO/notebooks-md"
BOOK_OUT="$REPO/target/book"
TOOLS="$REPO/.tools"
export PATH="$TOOLS/bin:$PATH"

install_crate() { # name version [cargo install flags]
    local name="$1" version="$2"
    shift 2
    if ! "$TOOLS/bin/$name" --version 2>/dev/null | grep -q "$version"; then
        echo "book: installing $name $version into .tools/"
        # one target folder for both tools, so their common dependencies build once
        cargo install --quiet --locked --version "$version" --root "$TOOLS" --target-dir "$TOOLS/target" "$@" "$name"
    fi
}

build() {
    # without mdbook's own server and file watcher: `serve` below needs neither
    install_crate mdbook "$MDBOOK_VERSION" --no-default-features --features search
    install_crate mdbook-katex "$MDBOOK_KATEX_VERSION"
    local start log
    start=$(date +%s%N)
    log="$(mktemp)"
    rm -rf "$BOOK_OUT"
    if ! mdbook build "$BOOK_SRC" >"$log" 2>&1; then
        cat "$log" >&2
        echo "book: mdbook build failed" >&2
        exit 1
    fi
    # mdBook reports problems it does not fail on (broken HTML, say) as warnings; the one
    # expected warning is mdbook-katex 0.10.0 noting it was built against mdbook 0.5.3
    if grep -E 'WARN|ERROR' "$log" | grep -v 'built against mdbook v0.5.3' >&2; then
        echo "book: mdbook warned" >&2
        exit 1
    fi
    rm -f "$log"
    python3 "$BOOK_SRC/book/links.py" "$REPO" "$BOOK_SRC" "$BOOK_OUT"
    echo "book: built in $(( ($(date +%s%N) - start) / 1000000 )) ms -> target/book/index.html"
}

browser_tools() {
    if ! command -v chromium >/dev/null || [ -z "$(fc-list :lang=ko)" ] || [ -z "$(fc-list :lang=ja)" ]; then
        echo "book: installing chromium and fonts-noto-cjk (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
    fi
    if [ ! -f "$TOOLS/node/node_modules/playwright-core/package.json" ] \
        || ! grep -q "\"version\": \"$PLAYWRIGHT_CORE_VERSION\"" "$TOOLS/node/node_modules/playwright-core/package.json"; then
        echo "book: installing playwright-core $PLAYWRIGHT_CORE_VERSION into .tools/node"
        npm install --silent --prefix "$TOOLS/node" --no-save --no-audit --no-fund "playwright-core@$PLAYWRIGHT_CORE_VERSION"
    fi
}

case "${1:-build}" in
build)
    build
    ;;
serve)
    build
    echo "book: http://127.0.0.1:${PORT:-3000}/ (Ctrl-C to stop)"
    python3 -m http.server --bind 127.0.0.1 --directory "$BOOK_OUT" "${PORT:-3000}"
    ;;
check)
    build
    browser_tools
    PLAYWRIGHT_CORE="$TOOLS/node/node_modules/playwright-core" \
        node "$BOOK_SRC/book/browser-check.js" "$BOOK_OUT" "$REPO/target/book-check"
    ;;
*)
    echo "usage: bash notebooks-md/book.sh build|serve|check" >&2
    exit 2
    ;;
esac
