#!/usr/bin/env bash
# Generate the PayCraft reference release: a Git repository with PayCraft's
# layout and one annotated tag per release, from the sources in release/.
#
#   reference/make-release.sh [DEST]      # default: reference/build/paycraft.git
#
# DEST is an ordinary (non-bare) repository: `git clone file://DEST` works and
# its tags are checked out like any PayCraft release. Authors, dates and file
# modes are fixed, so the same sources always give the same commit ids; when
# DEST already holds exactly those refs, nothing is touched.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$HERE/release"
DEST="${1:-$HERE/build/paycraft.git}"
MARKER="paycraft-reference-release"

die() { echo "make-release.sh: $*" >&2; exit 1; }
[ -f "$SRC/releases" ] || die "no release manifest at $SRC/releases"
command -v git >/dev/null 2>&1 || die "git not found"

if [ -e "$DEST" ] && [ ! -f "$DEST/.git/$MARKER" ] && [ -n "$(ls -A "$DEST")" ]; then
  die "$DEST exists and was not made by this script; remove it or choose another DEST"
fi

# Deterministic git: no user/system configuration, fixed identity and zone.
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="PayCraft Release" GIT_AUTHOR_EMAIL="release@paycraft.invalid"
export GIT_COMMITTER_NAME="PayCraft Release" GIT_COMMITTER_EMAIL="release@paycraft.invalid"
export TZ=UTC LC_ALL=C
umask 022

work="$(mktemp -d "${TMPDIR:-/tmp}/paycraft-release.XXXXXX")"
trap 'rm -rf "$work"' EXIT
repo="$work/repo"
git init -q -b main "$repo"
git -C "$repo" config core.fileMode true
git -C "$repo" config core.symlinks true

trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; printf '%s' "${s%"${s##*[![:space:]]}"}"; }

declare -A commit_of
last=""
while IFS='|' read -r tag parent date subject; do
  tag="$(trim "$tag")"
  case "$tag" in '' | \#*) continue ;; esac
  parent="$(trim "$parent")"; date="$(trim "$date")"; subject="$(trim "$subject")"

  tree="$work/tree-$tag"
  if [ "$parent" = "-" ]; then
    cp -a "$SRC/base" "$tree"
  else
    [ -n "${commit_of[$parent]:-}" ] || die "$tag: parent $parent is not defined above it"
    cp -a "$work/tree-$parent" "$tree"
    overlay="$SRC/$tag"
    [ -d "$overlay" ] || die "$tag: no overlay directory $overlay"
    if [ -f "$overlay/remove" ]; then
      grep -v '^[[:space:]]*\(#\|$\)' "$overlay/remove" | while read -r path; do
        rm -rf "${tree:?}/$path"
      done
    fi
    if [ -d "$overlay/files" ]; then
      cp -a "$overlay/files/." "$tree/"
    fi
    if [ -f "$overlay/symlinks" ]; then
      grep -v '^[[:space:]]*\(#\|$\)' "$overlay/symlinks" | while read -r path target; do
        mkdir -p "$(dirname "$tree/$path")"
        rm -rf "${tree:?}/$path"
        ln -s "$target" "$tree/$path"
      done
    fi
  fi
  # Git records only the executable bit: scripts 755, everything else 644.
  find "$tree" -type d -exec chmod 755 {} +
  find "$tree" -type f -exec chmod 644 {} +
  find "$tree" -type f -name '*.sh' -exec chmod 755 {} +

  export GIT_INDEX_FILE="$work/index-$tag"
  git -C "$repo" --work-tree="$tree" add -A .
  tree_id="$(git -C "$repo" write-tree)"
  unset GIT_INDEX_FILE

  parent_args=()
  [ "$parent" != "-" ] && parent_args=(-p "${commit_of[$parent]}")
  export GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date"
  commit_id="$(git -C "$repo" commit-tree "$tree_id" "${parent_args[@]}" -m "$subject")"
  git -C "$repo" tag -a "$tag" "$commit_id" -m "PayCraft $tag"
  unset GIT_AUTHOR_DATE GIT_COMMITTER_DATE
  commit_of[$tag]="$commit_id"
  last="$tag"
done <"$SRC/releases"

[ -n "$last" ] || die "the manifest defines no release"
# main follows PayCraft's head: the newest release.
git -C "$repo" update-ref refs/heads/main "${commit_of[$last]}"
git -C "$repo" checkout -q -f main
touch "$repo/.git/$MARKER"

refs() { git -C "$1" for-each-ref --format='%(refname) %(objectname)' refs/heads refs/tags; }

if [ -e "$DEST" ]; then
  if [ -f "$DEST/.git/$MARKER" ] && [ "$(refs "$DEST")" = "$(refs "$repo")" ] \
     && [ -z "$(git -C "$DEST" status --porcelain)" ]; then
    echo "reference release up to date: $DEST"
    exit 0
  fi
  if [ ! -f "$DEST/.git/$MARKER" ] && [ -n "$(ls -A "$DEST")" ]; then
    die "$DEST exists and was not made by this script; remove it or choose another DEST"
  fi
  rm -rf "$DEST"
fi
mkdir -p "$(dirname "$DEST")"
mv "$repo" "$DEST"
echo "reference release generated: $DEST"
git -C "$DEST" for-each-ref --format='  %(refname:short) -> %(*objectname)' refs/tags
