"""module_utils/metrics.py: the host's textfile metrics for node_exporter, read from what the host records.

Real files in a temporary directory, the real lease library's lock (a real holder process would be the
lock test's business: here the lock's status is injected), a real operation record and real backup
manifests written as the collection writes them. The rendered text is checked by Prometheus's own parser
(``promtool check metrics``), not only by string comparison.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import metrics, operation

REPO = Path(__file__).resolve().parents[4]


def promtool() -> str:
    found = shutil.which("promtool") or str(REPO / ".venv" / "bin" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.fail("promtool is missing: scripts/prepare.sh puts it in .venv/bin (from Debian's prometheus package)")
    return found


def parse(text: str) -> dict:
    """{(name, frozenset(labels)): value} of an exposition text (only what render writes)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, value = line.rsplit(" ", 1)
        if "{" in head:
            name, rest = head.split("{", 1)
            labels = frozenset(tuple(kv.split("=", 1)) for kv in rest[:-1].split('",') if kv)
            labels = frozenset((k, v.strip('"')) for k, v in labels)
        else:
            name, labels = head, frozenset()
        out[(name, labels)] = float(value)
    return out


def value(samples: dict, name: str, **labels) -> float:
    want = frozenset((k, str(v)) for k, v in labels.items())
    hits = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples in {sorted(k for k in samples if k[0] == name)}"
    return hits[0]


def write_backup(backup_dir: Path, name: str, created_at: str, size: int, kind: str = "backup") -> None:
    d = backup_dir / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"kind": kind, "created_at": created_at, "size": size}))


def test_render_is_valid_exposition_text_for_prometheus():
    fam = metrics.Family("paycraft_example", "gauge", 'help with a \\ backslash\nand a newline')
    fam.add(1, service='edge "runtime"\\x\n', host="billing-1")
    fam.add(0.5)
    text = metrics.render([fam, metrics.Family("paycraft_empty", "counter", "no samples")])
    assert "paycraft_empty" not in text
    assert 'service="edge \\"runtime\\"\\\\x\\n"' in text
    res = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_render_order_is_stable():
    a = metrics.Family("paycraft_b", "gauge", "b").add(1, x="2").add(2, x="1")
    b = metrics.Family("paycraft_a", "gauge", "a").add(3)
    assert metrics.render([a, b]) == metrics.render([b, a])
    assert metrics.render([a, b]).index("paycraft_a ") < metrics.render([a, b]).index('paycraft_b{x="1"}')


def test_unknown_type_is_refused():
    with pytest.raises(metrics.MetricsError, match="unknown metric type"):
        metrics.Family("paycraft_x", "histogram", "")


def test_an_interrupted_upgrade_shows_as_unfinished(tmp_path):
    record = operation.new_state("upgrade", "v1.0.0", "v1.1.0", {"run_id": "r1"})
    record["started_at"] = "2026-12-07T10:00:00Z"
    path = tmp_path / "operation.json"
    path.write_text(json.dumps(record))
    samples = parse(metrics.render(metrics.collect({"operation_file": str(path), "containers": False},
                                                   clock=lambda: 1_800_000_000)))
    assert value(samples, "paycraft_operation_unfinished", operation="upgrade") == 1
    assert value(samples, "paycraft_operation_started_timestamp_seconds", operation="upgrade") == \
        metrics.epoch("2026-12-07T10:00:00Z")
    assert not [k for k in samples if k[0] == "paycraft_operation_last_success"]
    assert value(samples, "paycraft_metrics_collected_timestamp_seconds") == 1_800_000_000


@pytest.mark.parametrize("status, success", [("done", 1), ("rolled_back", 0), ("failed", 0), ("refused", 0)])
def test_the_outcome_of_the_last_operation(tmp_path, status, success):
    record = operation.new_state("rollback", "v1.1.0", "v1.0.0", {"run_id": "r1"})
    record.update(status=status, finished_at="2026-12-07T10:05:00Z")
    path = tmp_path / "operation.json"
    path.write_text(json.dumps(record))
    samples = parse(metrics.render(metrics.collect({"operation_file": str(path), "containers": False})))
    assert value(samples, "paycraft_operation_unfinished", operation="rollback") == 0
    assert value(samples, "paycraft_operation_last_success", operation="rollback", status=status,
                 to_version="v1.0.0") == success
    assert value(samples, "paycraft_operation_finished_timestamp_seconds", status=status) == \
        metrics.epoch("2026-12-07T10:05:00Z")


def test_no_record_means_nothing_unfinished(tmp_path):
    samples = parse(metrics.render(metrics.collect({"operation_file": str(tmp_path / "none.json"),
                                                    "containers": False})))
    assert value(samples, "paycraft_operation_unfinished") == 0


def test_an_unreadable_record_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "operation.json"
    path.write_text("{half")
    with pytest.raises(metrics.MetricsError, match=str(path)):
        metrics.collect({"operation_file": str(path), "containers": False})


def test_the_lock_held_and_since_when(tmp_path):
    calls = []

    def status(lock):
        calls.append(lock)
        return "held", {"operation": "backup", "since": "2026-12-07T09:00:00Z", "since_epoch": 1796634000.0}

    samples = parse(metrics.render(metrics.collect({"lock_file": "/etc/paycraft/operation.json.lock",
                                                    "containers": False}, lock_status=status)))
    assert calls == ["/etc/paycraft/operation.json.lock"]
    assert value(samples, "paycraft_lock_held", operation="backup", stale="0") == 1
    assert value(samples, "paycraft_lock_held_since_timestamp_seconds", operation="backup") == 1796634000.0
    free = parse(metrics.render(metrics.lock_families("free", {"operation": "backup"})))
    assert value(free, "paycraft_lock_held") == 0
    assert not [k for k in free if k[0] == "paycraft_lock_held_since_timestamp_seconds"]
    stale = parse(metrics.render(metrics.lock_families("stale", {"since": "2026-12-07T09:00:00Z"})))
    assert value(stale, "paycraft_lock_held", stale="1") == 1
    assert value(stale, "paycraft_lock_held_since_timestamp_seconds") == metrics.epoch("2026-12-07T09:00:00Z")


def test_backups_the_newest_complete_one_and_the_offsite_state(tmp_path):
    backups = tmp_path / "backups"
    write_backup(backups, "20261205T020000Z-v1.0.0", "2026-12-05T02:00:00Z", 1000)
    write_backup(backups, "20261206T020000Z-v1.0.0", "2026-12-06T02:00:00Z", 2048)
    write_backup(backups, "20261207T020000Z-v1.1.0", "2026-12-07T02:00:00Z", 9, kind="snapshot")
    (backups / "20261207T030000Z-half").mkdir()  # an interrupted one: no manifest
    (backups / "offsite.json").write_text(json.dumps({"state": "failed", "pending": ["a", "b"]}))
    samples = parse(metrics.render(metrics.collect({"backup_dir": str(backups), "containers": False})))
    assert value(samples, "paycraft_backups_kept") == 2
    assert value(samples, "paycraft_backup_last_success_timestamp_seconds") == metrics.epoch("2026-12-06T02:00:00Z")
    assert value(samples, "paycraft_backup_last_size_bytes") == 2048
    assert value(samples, "paycraft_backup_offsite_ok") == 0
    assert value(samples, "paycraft_backup_offsite_pending") == 2


def test_no_backup_directory_is_zero_backups(tmp_path):
    samples = parse(metrics.render(metrics.collect({"backup_dir": str(tmp_path / "none"), "containers": False})))
    assert value(samples, "paycraft_backups_kept") == 0
    assert not [k for k in samples if k[0] == "paycraft_backup_last_success_timestamp_seconds"]
    assert not [k for k in samples if k[0] == "paycraft_backup_offsite_ok"]


def test_results_recorded_and_read_back(tmp_path):
    path = tmp_path / "results.json"
    metrics.record_result(str(path), "backup", True, "2026-12-07T02:00:00Z", "20261207T020000Z-v1.1.0")
    metrics.record_result(str(path), "drill", False, "2026-12-07T03:00:00Z", "products differ")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    samples = parse(metrics.render(metrics.collect({"results_file": str(path), "containers": False})))
    assert value(samples, "paycraft_result_success", kind="backup") == 1
    assert value(samples, "paycraft_result_success", kind="drill") == 0
    assert value(samples, "paycraft_result_timestamp_seconds", kind="drill") == metrics.epoch("2026-12-07T03:00:00Z")
    with pytest.raises(metrics.MetricsError, match="unknown result kind"):
        metrics.record_result(str(path), "upgrade", True, "2026-12-07T03:00:00Z")


def test_containers_as_the_engine_reports_them():
    inspected = [
        {"Name": "/paycraft_edge_runtime", "RestartCount": 4,
         "State": {"Running": True, "Restarting": True},
         "Config": {"Labels": {"com.docker.compose.service": "edge-runtime"}}},
        {"Name": "/paycraft_db", "RestartCount": 0, "State": {"Running": False, "Restarting": False},
         "Config": {"Labels": {"com.docker.compose.service": "db"}}},
        {"Name": "/paycraft_kong", "RestartCount": 0, "State": {"Running": True}, "Config": {}},
    ]
    samples = parse(metrics.render(metrics.container_families(inspected)))
    assert value(samples, "paycraft_container_running", service="edge-runtime") == 0
    assert value(samples, "paycraft_container_restarting", service="edge-runtime") == 1
    assert value(samples, "paycraft_container_restarts_total", container="paycraft_edge_runtime") == 4
    assert value(samples, "paycraft_container_running", service="db") == 0
    assert value(samples, "paycraft_container_running", container="paycraft_kong", service="paycraft_kong") == 1


class FakeDocker:
    """The docker CLI's answers, as subprocess.run returns them (the engine itself is the Molecule scenario's)."""

    def __init__(self, names, inspect_rc=0):
        self.names, self.inspect_rc, self.calls = names, inspect_rc, []

    def __call__(self, argv, cwd=None, timeout=None):
        self.calls.append(argv)
        if argv[1] == "ps":
            return 0, "\n".join(self.names) + "\n", ""
        if len(argv) > 3 and self.inspect_rc:
            return self.inspect_rc, "", "Error: No such object: paycraft_gone"
        found = [{"Name": "/" + n, "State": {"Running": True}} for n in argv[2:] if n != "paycraft_gone"]
        return (0 if found else 1), json.dumps(found), ""


def test_inspect_reads_every_paycraft_container():
    docker = FakeDocker(["paycraft_db", "paycraft_kong"])
    assert [c["Name"] for c in metrics.inspect_containers(docker)] == ["/paycraft_db", "/paycraft_kong"]
    assert docker.calls[0][:4] == ["docker", "ps", "--all", "--filter"]


def test_inspect_survives_a_container_removed_meanwhile():
    docker = FakeDocker(["paycraft_db", "paycraft_gone", "paycraft_kong"], inspect_rc=1)
    assert [c["Name"] for c in metrics.inspect_containers(docker)] == ["/paycraft_db", "/paycraft_kong"]


def test_the_local_runner_runs_real_commands():
    assert metrics.local_runner(["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\n", "err\n")
    assert metrics.local_runner(["no-such-binary-here"])[0] == 127
    assert metrics.local_runner(["sleep", "5"], timeout=0.2)[0] == 124


def test_no_engine_is_an_error():
    def broken(argv, cwd=None, timeout=None):
        return 1, "", "Cannot connect to the Docker daemon"

    with pytest.raises(metrics.MetricsError, match="Cannot connect to the Docker daemon"):
        metrics.inspect_containers(broken)


def test_write_is_atomic_and_changed_ignores_the_collection_time(tmp_path):
    out = tmp_path / "paycraft.prom"
    fam = metrics.Family("paycraft_backups_kept", "gauge", "n").add(2)

    def text(at):
        return metrics.render([fam, metrics.Family("paycraft_metrics_collected_timestamp_seconds", "gauge",
                                                   "t").add(at)])

    assert metrics.write(str(out), text(1)) is True
    assert metrics.write(str(out), text(2)) is False
    assert "} 2" in out.read_text() or out.read_text().endswith(" 2\n")
    fam.samples[0] = ({}, 3.0)
    assert metrics.write(str(out), text(3)) is True
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_the_collector_runs_on_a_host_without_ansible(tmp_path):
    """The scheduled collector: python3 -m ...metrics --config, from a library laid out as the backup runner's
    (roles/backup: ansible_collections/paycraft/selfhost/plugins/module_utils with its packages), no Ansible."""
    lib = tmp_path / "lib"
    utils = lib / "ansible_collections" / "paycraft" / "selfhost" / "plugins" / "module_utils"
    utils.mkdir(parents=True)
    for pkg in (utils, *utils.parents):
        if pkg == lib:
            break
        (pkg / "__init__.py").write_text("")
    src = REPO / "plugins" / "module_utils"
    for name in ("metrics.py", "backup.py", "snapshot.py", "preflight.py", "redact.py", "lease.py"):
        shutil.copy(src / name, utils / name)
    record = operation.new_state("upgrade", "v1.0.0", "v1.1.0", {"run_id": "r1"})
    (tmp_path / "operation.json").write_text(json.dumps(record))
    out = tmp_path / "textfile" / "paycraft.prom"
    out.parent.mkdir()
    cfg = {"operation_file": str(tmp_path / "operation.json"), "lock_file": str(tmp_path / "operation.json.lock"),
           "backup_dir": str(tmp_path / "backups"), "results_file": str(tmp_path / "results.json"),
           "containers": False, "out": str(out)}
    (tmp_path / "metrics.json").write_text(json.dumps(cfg))
    env = dict({k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, PYTHONPATH=str(lib))
    res = subprocess.run(["python3", "-m", "ansible_collections.paycraft.selfhost.plugins.module_utils.metrics",
                          "--config", str(tmp_path / "metrics.json")],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    samples = parse(out.read_text())
    assert value(samples, "paycraft_operation_unfinished", operation="upgrade") == 1
    assert value(samples, "paycraft_lock_held") == 0
    check = subprocess.run([promtool(), "check", "metrics"], input=out.read_text(), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_collector_without_an_output_says_what_to_set(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    assert metrics.main(["--config", str(tmp_path / "metrics.json")]) == 2
