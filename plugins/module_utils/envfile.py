# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse and render docker-compose style env files, write them atomically, diff them masked.

Pure Python (no Ansible import): used by the paycraft_keys module and unit tested directly.

Syntax understood (the subset that ``docker compose --env-file``/``env_file:`` and a POSIX
shell ``. ./.env`` agree on):

* ``KEY=value`` and ``export KEY=value``; blank lines and ``# comments`` are kept verbatim;
* unquoted values end at `` #`` (an inline comment) and are stripped of surrounding blanks;
* ``'single quoted'`` values are literal; ``"double quoted"`` values understand ``\\n``,
  ``\\t``, ``\\"``, ``\\\\`` and ``\\$``;
* lines that are none of the above are kept verbatim and reported in ``EnvFile.invalid``.

Rendering keeps every untouched line byte for byte (order, comments, quoting, ``export``);
a changed key is rewritten in place, a new key is appended. Values are written unquoted when
they only hold characters that neither compose nor a shell interpret, single-quoted otherwise
(compose does not interpolate ``$`` inside single quotes), double-quoted only when they contain
a single quote or a newline.
"""

from __future__ import annotations

import os
import re
import tempfile

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_LINE_RE = re.compile(r"^(?P<indent>\s*)(?P<export>export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=(?P<rest>.*)$")
_SAFE_UNQUOTED_RE = re.compile(r"^[A-Za-z0-9_./:@+=,~%-]*$")
MASK = "********"

_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    """An env file or a value that cannot be represented."""


def _parse_value(rest: str) -> str:
    """Value part of ``KEY=<rest>`` (rest already excludes the ``=``)."""
    text = rest.strip()
    if not text:
        return ""
    if text[0] == "'":
        end = text.find("'", 1)
        if end < 0:
            raise EnvFileError("unterminated single-quoted value")
        return text[1:end]
    if text[0] == '"':
        out = []
        i = 1
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                out.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        raise EnvFileError("unterminated double-quoted value")
    # unquoted: an inline comment starts at whitespace followed by '#'
    m = re.search(r"\s#", text)
    if m:
        text = text[: m.start()]
    return text.strip()


def quote_value(value: str) -> str:
    """Render a value so that both compose and a POSIX shell read it back unchanged."""
    if not isinstance(value, str):
        raise EnvFileError("env values must be strings")
    if "\x00" in value:
        raise EnvFileError("env values cannot contain NUL bytes")
    if _SAFE_UNQUOTED_RE.match(value):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value:
        return "'" + value + "'"
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n").replace("\r", "\\r")
    )
    return '"' + escaped + '"'


def render_line(key: str, value: str, export: bool = False) -> str:
    if not KEY_RE.match(key):
        raise EnvFileError(f"invalid env variable name {key!r}")
    return ("export " if export else "") + key + "=" + quote_value(value)


class EnvFile:
    """An env file as an ordered list of lines, some of which carry a key."""

    def __init__(self, lines=None):
        # each entry: [raw_text, key_or_None, value_or_None, export_flag]
        self._lines: list[list] = []
        self.invalid: list[int] = []  # 1-based line numbers that are neither blank, comment nor KEY=value
        for line in lines or []:
            self._lines.append(line)

    @classmethod
    def parse(cls, text: str) -> EnvFile:
        env = cls()
        if text.startswith("\ufeff"):
            text = text[1:]
        for number, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                env._lines.append([raw, None, None, False])
                continue
            m = _LINE_RE.match(raw)
            if not m:
                env._lines.append([raw, None, None, False])
                env.invalid.append(number)
                continue
            try:
                value = _parse_value(m.group("rest"))
            except EnvFileError:
                env._lines.append([raw, None, None, False])
                env.invalid.append(number)
                continue
            env._lines.append([raw, m.group("key"), value, bool(m.group("export"))])
        return env

    @classmethod
    def read(cls, path: str) -> EnvFile:
        """Parse ``path``; a missing file is an empty EnvFile."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.parse(fh.read())
        except FileNotFoundError:
            return cls()

    # -- mapping view (the last assignment of a key wins, as in compose) --------------------
    def keys(self) -> list[str]:
        order: dict[str, None] = {}
        for _raw, key, _value, _exp in self._lines:
            if key is not None and key not in order:
                order[key] = None
        return list(order)

    def as_dict(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in self.keys():
            out[key] = self.get(key)
        return out

    def __contains__(self, key: str) -> bool:
        return any(line[1] == key for line in self._lines)

    def get(self, key: str, default=None):
        value = default
        for _raw, k, v, _exp in self._lines:
            if k == key:
                value = v
        return value

    def set(self, key: str, value: str) -> bool:
        """Set ``key``; returns True when the file content changes.

        The last line assigning ``key`` is rewritten in place (keeping its ``export``);
        a key not present yet is appended.
        """
        if not KEY_RE.match(key):
            raise EnvFileError(f"invalid env variable name {key!r}")
        idx = None
        for i, line in enumerate(self._lines):
            if line[1] == key:
                idx = i
        if idx is None:
            self._lines.append([render_line(key, value), key, value, False])
            return True
        line = self._lines[idx]
        if line[2] == value:
            return False
        self._lines[idx] = [render_line(key, value, export=line[3]), key, value, line[3]]
        return True

    def add_comment(self, text: str) -> None:
        for part in text.splitlines() or [""]:
            self._lines.append([("# " + part) if part else "#", None, None, False])

    def add_blank(self) -> None:
        self._lines.append(["", None, None, False])

    def render(self, mask=None, marks=None) -> str:
        """The file text.

        ``mask``: a predicate on the key; masked keys show ``KEY=********``.
        ``marks``: dict key -> suffix appended to that key's masked value (for diffs).
        """
        out = []
        for raw, key, _value, export in self._lines:
            if key is not None and mask is not None and mask(key):
                shown = MASK + (marks or {}).get(key, "")
                out.append(("export " if export else "") + key + "=" + shown)
            elif key is not None and mask is not None:
                # show a non-secret value, but re-rendered so nothing else of the raw line leaks
                out.append(render_line(key, _value, export))
            else:
                out.append(raw)
        return "\n".join(out) + ("\n" if out else "")

    def copy(self) -> EnvFile:
        clone = EnvFile([list(line) for line in self._lines])
        clone.invalid = list(self.invalid)
        return clone


def masked_diff(before: EnvFile, after: EnvFile, path: str, show_values=()) -> dict:
    """An Ansible ``diff`` dict where every value is masked except keys in ``show_values``.

    A key whose value changed shows ``KEY=******** (old)`` before and ``KEY=******** (new)``
    after, so the unified diff still points at it without revealing anything.
    """
    show = set(show_values)
    b, a = before.as_dict(), after.as_dict()
    changed = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}

    def mask(key: str) -> bool:
        return key not in show

    return {
        "before_header": path,
        "after_header": path,
        "before": before.render(mask=mask, marks={k: " (old)" for k in changed}),
        "after": after.render(mask=mask, marks={k: " (new)" for k in changed}),
    }


def write_atomic(path: str, text: str, mode: int = 0o600, uid: int = -1, gid: int = -1) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory, fsync, then rename.

    The temp file gets ``mode`` and ownership before any content is written, so a secret is
    never readable by others, not even for a moment. A symlink at ``path`` is followed (its
    target is replaced, the link stays).
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(prefix=".paycraft-env-", dir=directory)
    try:
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fd = -1
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if fd != -1:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
