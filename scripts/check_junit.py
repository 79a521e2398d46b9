#!/usr/bin/env python3
"""Fail a strict test run whose pytest junit report shows a skipped test, or no test at all.

    python3 scripts/check_junit.py REPORT.xml

scripts/test.sh runs it after pytest (``--junitxml``). A strict run tests everything:
a skip (an absent prerequisite, an ``xfail``) means something was not tested, so the
run fails and names each skipped test with its reason. A report without a single
test case fails too. Exit status: 0 clean, 1 skipped or empty, 2 unreadable report.
Standard library only.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET  # our own pytest's report, not untrusted input


def problems(path: str) -> list[str]:
    """The lines to print for the report at ``path``; empty when every test ran."""
    root = ET.parse(path).getroot()  # noqa: S314 - see the import
    cases = list(root.iter("testcase"))
    if not cases:
        return [f"no test ran (the report {path} holds no test case)"]
    skipped = []
    for case in cases:
        for skip in case.findall("skipped"):
            name = "::".join(p for p in (case.get("classname"), case.get("name")) if p)
            reason = " ".join((skip.get("message") or skip.text or "").split())
            skipped.append(f"  {name}: {reason}" if reason else f"  {name}")
    if not skipped:
        return []
    return [f"{len(skipped)} of {len(cases)} tests skipped; a strict run tests everything:", *skipped]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_junit.py REPORT.xml", file=sys.stderr)
        return 2
    try:
        lines = problems(argv[0])
    except (OSError, ET.ParseError) as exc:
        print(f"cannot read the junit report {argv[0]}: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
