#!/usr/bin/env bash
# Rebuilds the retrieval test corpus: the HTML of Python 3.11's library
# reference, from Debian's python3.11-doc package, into DIR/library/
# (default .retrieval-corpus). questions.jsonl names its documents as
# `library/<page>.html`, the sources `keel ingest DIR` writes.
#
#   tests/retrieval/build_corpus.sh [DIR]
#   python3 tests/retrieval/check_questions.py DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-.retrieval-corpus}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# apt-get download needs no root and installs nothing; it drops the .deb
# in the current directory.
(cd "$work" && apt-get download python3.11-doc >/dev/null)
dpkg-deb -x "$work"/python3.11-doc_*.deb "$work/root"
version="$(dpkg-deb -f "$work"/python3.11-doc_*.deb Version)"
rm -rf "$out/library"
mkdir -p "$out/library"
cp "$work/root/usr/share/doc/python3.11/html/library/"*.html "$out/library/"
echo "$version" > "$out/VERSION"
echo "python3.11-doc $version: $(ls "$out/library" | wc -l) pages in $out/library"
