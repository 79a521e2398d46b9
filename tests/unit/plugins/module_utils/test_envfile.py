"""module_utils/envfile.py: parsing, rendering, atomic write, masked diff.

Values are cross-checked against the two real readers of the file: bash (``set -a; . .env``, what
hand-run scripts do) and ``docker compose --env-file`` (what the stack reads).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as ef
from paycraft_testlib import missing

SAMPLE = """\
# PayCraft self-host env
   # indented comment

export PAYCRAFT_API_URL=http://localhost:54321
PAYCRAFT_DB_PASSWORD='single $quoted # not a comment'
PAYCRAFT_JWT_SECRET="double \\"quoted\\" \\$HOME\\nline2"
PLAIN = value with spaces   # inline comment
HASH=abc#def
EMPTY=
EMPTY_QUOTED=""
this line is garbage
BROKEN='unterminated
DUP=first
DUP=second
"""

TRICKY = [
    "",
    "simple",
    "with space",
    "dollar $HOME ${X} $$",
    "single ' quote",
    'double " quote',
    "both ' and \" and $x",
    "hash # inside",
    "#starts-with-hash",
    "back\\slash",
    "multi\nline",
    "tab\there",
    "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.abc-_",
    "base64+/==",
    "  leading and trailing  ",
    "équipe ✅",
]


def test_parse_sample():
    env = ef.EnvFile.parse(SAMPLE)
    assert env.as_dict() == {
        "PAYCRAFT_API_URL": "http://localhost:54321",
        "PAYCRAFT_DB_PASSWORD": "single $quoted # not a comment",
        "PAYCRAFT_JWT_SECRET": 'double "quoted" $HOME\nline2',
        "PLAIN": "value with spaces",
        "HASH": "abc#def",
        "EMPTY": "",
        "EMPTY_QUOTED": "",
        "DUP": "second",
    }
    assert env.keys()[0] == "PAYCRAFT_API_URL"
    assert env.invalid == [11, 12]


def test_untouched_file_renders_byte_for_byte():
    assert ef.EnvFile.parse(SAMPLE).render() == SAMPLE


def test_set_rewrites_in_place_keeps_export_and_appends_new_keys():
    env = ef.EnvFile.parse(SAMPLE)
    assert env.set("PAYCRAFT_API_URL", "https://billing.example.com") is True
    assert env.set("HASH", "abc#def") is False
    assert env.set("DUP", "third") is True
    assert env.set("NEW_KEY", "new value") is True
    lines = env.render().splitlines()
    assert lines[3] == "export PAYCRAFT_API_URL=https://billing.example.com"
    assert lines[:3] == SAMPLE.splitlines()[:3]
    assert lines[12] == "DUP=first" and lines[13] == "DUP=third"  # the last assignment is the one that counts
    assert lines[-1] == "NEW_KEY='new value'"
    assert "this line is garbage" in lines
    assert ef.EnvFile.parse(env.render()).get("DUP") == "third"


@pytest.mark.parametrize("value", TRICKY)
def test_quote_roundtrip(value):
    text = ef.render_line("K", value) + "\n"
    parsed = ef.EnvFile.parse(text).get("K")
    assert parsed == value


def test_invalid_names_and_nul_are_refused():
    env = ef.EnvFile()
    with pytest.raises(ef.EnvFileError):
        env.set("1BAD", "x")
    with pytest.raises(ef.EnvFileError):
        env.set("BAD KEY", "x")
    with pytest.raises(ef.EnvFileError):
        ef.quote_value("nul\x00byte")


def _tricky_file(tmp_path):
    env = ef.EnvFile()
    expected = {}
    for i, value in enumerate(TRICKY):
        if "\n" in value or "\t" in value:
            continue  # multi-line values: compose and bash disagree on escapes; secrets never hold them
        env.set(f"V{i}", value)
        expected[f"V{i}"] = value
    path = tmp_path / "t.env"
    path.write_text(env.render())
    return path, expected


def test_bash_reads_back_every_value(tmp_path):
    if shutil.which("bash") is None:
        missing("bash")
    path, expected = _tricky_file(tmp_path)
    for key, value in expected.items():
        out = subprocess.run(["bash", "-c", f'set -a; . "$1"; printf %s "${key}"', "_", str(path)],
                             capture_output=True, text=True, check=True).stdout
        assert out == value, key


def test_docker_compose_reads_back_every_value(tmp_path, docker_engine):
    _path, expected = _tricky_file(tmp_path)
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  probe:\n    image: paycraft-local/debian:bookworm\n    env_file: [t.env]\n"
    )
    proc = subprocess.run(["docker", "compose", "-f", str(compose), "config", "--format", "json"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    environment = json.loads(proc.stdout)["services"]["probe"]["environment"]
    for key, value in expected.items():
        # `config` prints literal dollars doubled ($$), as a compose file would need them
        assert (environment.get(key) or "").replace("$$", "$") == value, key


def test_write_atomic_mode_owner_and_no_leftovers(tmp_path):
    path = tmp_path / "paycraft.env"
    ef.write_atomic(str(path), "A=1\n", mode=0o600, uid=os.getuid(), gid=os.getgid())
    assert path.read_text() == "A=1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    ef.write_atomic(str(path), "A=2\n", mode=0o600)
    assert path.read_text() == "A=2\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paycraft.env"]


def test_write_atomic_follows_a_symlink(tmp_path):
    target = tmp_path / "real.env"
    target.write_text("A=1\n")
    link = tmp_path / ".env"
    link.symlink_to(target)
    ef.write_atomic(str(link), "A=3\n")
    assert link.is_symlink() and target.read_text() == "A=3\n"


def test_write_atomic_failure_leaves_old_file(tmp_path):
    path = tmp_path / "paycraft.env"
    path.write_text("A=1\n")
    with pytest.raises(TypeError):
        ef.write_atomic(str(path), None)  # type: ignore[arg-type]
    assert path.read_text() == "A=1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paycraft.env"]


def test_masked_diff_never_shows_values():
    before = ef.EnvFile.parse("# c\nSECRET=old-secret-value\nSAME=same-secret\nURL=http://a\n")
    after = before.copy()
    after.set("SECRET", "new-secret-value")
    after.set("ADDED", "added-secret")
    after.set("URL", "http://b")
    diff = ef.masked_diff(before, after, "/etc/paycraft/paycraft.env", show_values=["URL"])
    text = diff["before"] + diff["after"]
    for secret in ("old-secret-value", "new-secret-value", "same-secret", "added-secret"):
        assert secret not in text
    assert diff["before"] == "# c\nSECRET=******** (old)\nSAME=********\nURL=http://a\n"
    assert diff["after"] == "# c\nSECRET=******** (new)\nSAME=********\nURL=http://b\nADDED=******** (new)\n"
    assert diff["before_header"] == diff["after_header"] == "/etc/paycraft/paycraft.env"


def test_masked_render_does_not_leak_raw_lines_of_shown_keys():
    env = ef.EnvFile.parse("URL=http://a # secret-in-comment\n")
    assert env.render(mask=lambda key: key != "URL") == "URL=http://a\n"
