#!/usr/bin/env bash
# Fetch the real third-party test suites racefree is benchmarked and checked against.
# Pinned sdists (which ship their tests) are downloaded with pip into bench/.suites/ (git-ignored)
# and unpacked there; nothing fetched here is ever committed. Idempotent.
#
#   bash bench/fetch-suites.sh            # all suites
#   bash bench/fetch-suites.sh attrs      # only the named ones
set -euo pipefail
cd "$(dirname "$0")"
# NAME==VERSION of projects whose sdists ship their tests, smallest to largest test count.
SUITES=(
  "packaging==26.3"
  "more-itertools==11.2.1"
  "attrs==26.1.0"
  "python-dateutil==4.0.0"
  "boltons==26.2.0"
  "toolz==1.2.0"
)
want=("$@")
mkdir -p .suites/sdists
for spec in "${SUITES[@]}"; do
  name=${spec%%==*}
  version=${spec##*==}
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  dest=.suites/$name
  if [ -f "$dest/.fetched-$version" ]; then continue; fi
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation -d .suites/sdists "$spec" 2>/dev/null \
    || python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: -d .suites/sdists "$spec"
  archive=$(ls .suites/sdists/ | grep -i -E "^${name//-/[-_]}-${version}\.(tar\.gz|zip)$" | head -n 1)
  [ -n "$archive" ] || { echo "fetch-suites: no sdist for $spec in bench/.suites/sdists" >&2; exit 1; }
  rm -rf "$dest" && mkdir -p "$dest"
  case "$archive" in
    *.zip) python3 -m zipfile -e ".suites/sdists/$archive" "$dest.tmp" && mv "$dest.tmp"/*/* "$dest"/ && rm -rf "$dest.tmp" ;;
    *) tar -xzf ".suites/sdists/$archive" -C "$dest" --strip-components=1 ;;
  esac
  touch "$dest/.fetched-$version"
  echo "fetched $spec into bench/$dest"
done
