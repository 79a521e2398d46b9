"""paycraft_converged's fingerprint: the parts that need no Docker or Postgres."""

from __future__ import annotations

from ansible_collections.paycraft.selfhost.plugins.module_utils import converged, migrate


def test_hidden_sql_files_are_the_same_set_as_the_engine(tmp_path):
    """A hidden .x.sql is not a migration for the engine, so it is not one for the fast path either."""
    (tmp_path / "001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / ".x.sql").write_text("SELECT 2;\n")
    (tmp_path / "._001_a.sql").write_text("resource fork\n")
    (tmp_path / "notes.txt").write_text("n\n")
    engine = {m.version: m.checksum for m in migrate.load_migrations(str(tmp_path))}
    assert converged.migrations_fingerprint(str(tmp_path)) == engine == {"001_a": engine["001_a"]}


def test_the_env_link_is_seen_as_a_link(tmp_path):
    env = tmp_path / "paycraft.env"
    env.write_text("A=1\n")
    link = tmp_path / ".env"
    assert converged.link_fingerprint(str(link)) is None
    link.symlink_to(env)
    assert converged.link_fingerprint(str(link)) == {"link": str(env)}
    link.unlink()
    link.write_text("A=1\n")  # a hand-made copy instead of the link
    fp = converged.link_fingerprint(str(link))
    assert fp["link"] is None and fp["sha256"]


def test_managed_files_outside_gits_view_are_part_of_the_fingerprint():
    params = {"env_file": "/etc/paycraft/paycraft.env", "override_file": "/etc/paycraft/compose.override.yml",
              "env_link": "/opt/paycraft/src/infra/selfhost/.env", "license_file": ""}
    assert converged.managed_files(params) == {
        "env_file": "/etc/paycraft/paycraft.env",
        "override_file": "/etc/paycraft/compose.override.yml",
        "env_link": "/opt/paycraft/src/infra/selfhost/.env",
    }
    lic = dict(params, license_file="/opt/paycraft/src/infra/selfhost/LICENSE-ENTERPRISE.key")
    assert "license_file" in converged.managed_files(lic)


def _live(**over):
    live = {
        "checkout": {"head": "abc", "at_version": True, "clean": True},
        "files": {"env_file": {"sha256": "1", "mode": "0600", "uid": 0}, "env_link": {"link": "/etc/p.env"}},
        "stack": {"wanted": {"db": "h1"}, "image_ids": {"i": "sha:1"},
                  "containers": {"db": {"id": "c1", "env": "e1", "config_hash": "h1"}}},
        "migrations": {"001": "s1"},
        "ledger": {"rows": {"001": {"checksum": "s1", "applied_at": "2026-01-01T00:00:00+00:00"}},
                   "system_identifier": "7300000000000000001"},
    }
    live.update(over)
    return live


def test_drift_names_what_changed():
    old = _live()
    assert converged.drift(old, _live()) == []
    reset = _live(ledger={"rows": old["ledger"]["rows"], "system_identifier": "7300000000000000002"})
    assert converged.drift(old, reset) == [
        "the database was initialised again since the last successful run (a reset?)"]
    reapplied = _live(ledger={"rows": {"001": {"checksum": "s1", "applied_at": "2026-02-02T00:00:00+00:00"}},
                              "system_identifier": "7300000000000000001"})
    assert converged.drift(old, reapplied) == ["the migration ledger changed since the last successful run"]
    relinked = _live(files={**old["files"], "env_link": {"link": None, "sha256": "1", "mode": "0644", "uid": 0}})
    assert converged.drift(old, relinked) == ["env link changed since the last successful run"]
    recreated = _live(stack={**old["stack"], "containers": {"db": {"id": "c2", "env": "e2", "config_hash": "h1"}}})
    assert converged.drift(old, recreated) == ["container(s) db changed since the last successful run"]



def test_the_filled_gaps_are_part_of_the_fingerprint(tmp_path):
    """The collection's kong file and router function: a hand edit or a removal means a full run."""
    fill = tmp_path / "fill"
    assert converged.fill_files(str(fill)) == [] and converged.fill_files("") == []
    (fill / "paycraft_main").mkdir(parents=True)
    (fill / "kong.yml").write_text("services: []\n")
    (fill / "paycraft_main" / "index.ts").write_text("serve()\n")
    files = converged.fill_files(str(fill))
    assert files == [str(fill / "kong.yml"), str(fill / "paycraft_main" / "index.ts")]
    old = _live(files={**_live()["files"], **{f: converged.file_fingerprint(f) for f in files}})
    (fill / "kong.yml").write_text("services: [edited]\n")
    edited = _live(files={**_live()["files"], **{f: converged.file_fingerprint(f) for f in files}})
    assert converged.drift(old, edited) == [f"{fill / 'kong.yml'} changed since the last successful run"]
    (fill / "paycraft_main" / "index.ts").unlink()
    gone = _live(files={**_live()["files"], **{f: converged.file_fingerprint(f) for f in converged.fill_files(str(fill))}})
    assert converged.drift(edited, gone) == [
        f"{fill / 'paycraft_main' / 'index.ts'} changed since the last successful run"]
