#!/usr/bin/env bash
# Checks that every tracked C++ file follows .clang-format (clang-format 14); exits 1 naming the files
# that do not. `clang-format-14 -i $(git ls-files '*.cpp' '*.h')` applies the layout.
set -euo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || true)
[ -n "$fmt" ] || { echo "check_format: clang-format-14 not found (scripts/setup.sh installs it)" >&2; exit 1; }
bad=()
while IFS= read -r f; do
  "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.cpp' '*.h')
if ((${#bad[@]})); then
  echo "check_format: ${#bad[@]} file(s) differ from .clang-format: ${bad[*]}" >&2
  echo "  fix: clang-format-14 -i ${bad[*]}" >&2
  exit 1
fi
echo "check_format: every C++ file follows .clang-format"
