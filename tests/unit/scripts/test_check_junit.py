"""scripts/check_junit.py: a strict run fails on a skipped test or on no test, on real pytest reports."""

from __future__ import annotations

import subprocess
import sys

from paycraft_testlib import REPO

CHECKER = REPO / "scripts" / "check_junit.py"


def _report(tmp_path, source: str):
    """Run pytest on a throw-away test file and return its junit report (pytest's own format)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_sample.py").write_text(source)
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"),
                    f"--junitxml={report}", str(tmp_path)], cwd=tmp_path, capture_output=True, check=False)
    assert report.is_file()
    return report


def _check(report):
    return subprocess.run([sys.executable, str(CHECKER), str(report)], capture_output=True, text=True, check=False)


def test_a_clean_report_passes(tmp_path):
    result = _check(_report(tmp_path, "def test_one():\n    pass\n\ndef test_two():\n    pass\n"))
    assert (result.returncode, result.stderr) == (0, "")


def test_a_skipped_test_fails_the_run_and_is_named_with_its_reason(tmp_path):
    source = (
        "import pytest\n\n"
        "def test_ran():\n    pass\n\n"
        "def test_needs_dockerd():\n    pytest.skip('not installed: dockerd (run scripts/prepare.sh)')\n"
    )
    result = _check(_report(tmp_path, source))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "1 of 2 tests skipped; a strict run tests everything:"
    assert lines[1] == "  test_sample::test_needs_dockerd: not installed: dockerd (run scripts/prepare.sh)"
    assert len(lines) == 2


def test_skip_markers_and_xfail_count_as_skips(tmp_path):
    source = (
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason='no openssl')\n"
        "def test_tls():\n    pass\n\n"
        "@pytest.mark.xfail(reason='known bug')\n"
        "def test_known():\n    assert False\n"
    )
    result = _check(_report(tmp_path, source))
    assert result.returncode == 1
    assert "2 of 2 tests skipped" in result.stderr
    assert "test_sample::test_tls: no openssl" in result.stderr
    assert "test_sample::test_known" in result.stderr


def test_a_run_where_no_test_ran_fails(tmp_path):
    report = _report(tmp_path, "# no test here\n")
    result = _check(report)
    assert result.returncode == 1
    assert result.stderr.strip() == f"no test ran (the report {report} holds no test case)"


def test_an_unreadable_report_is_an_error_not_a_pass(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<testsuites><testsuite>")
    assert _check(broken).returncode == 2
    assert _check(tmp_path / "absent.xml").returncode == 2
