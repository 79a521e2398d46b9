"""Unit tests of plugins/module_utils/preflight.py: parsing and the /proc walk, on test data.

The fake /proc trees below are data written to tmp_path (the same layout the kernel exposes), read
by the real code; the live /proc is exercised by tests/integration/preflight.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import preflight as p
from paycraft_testlib import REPO

# ------------------------------------------------------------------ versions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20.10.24+dfsg1", (20, 10, 24)),
        ("28.2.2", (28, 2, 2)),
        ("24.0", (24, 0, 0)),
        ("24", (24, 0, 0)),
        ("v2.40.3", (2, 40, 3)),
        ("2.40.3\n", (2, 40, 3)),
        ("5:24.0.7-1~debian.12~bookworm", (24, 0, 7)),
        ("26.1.3-desktop.1", (26, 1, 3)),
        ("1.29.2", (1, 29, 2)),
    ],
)
def test_parse_version(text, expected):
    assert p.parse_version(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "unknown", None, "Cannot connect to the Docker daemon"])
def test_parse_version_rejects_non_versions(text):
    assert p.parse_version(text) is None


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [
        ("20.10.24+dfsg1", "24.0", False),
        ("20.10.24+dfsg1", "20.10", True),
        ("24.0.0", "24", True),
        ("23.9.99", "24.0", False),
        ("28.2.2", "24.0", True),
        ("2.40.3", "2.0", True),
        ("1.29.2", "2.0", False),
        ("20.10.24", "99.0", False),
    ],
)
def test_version_at_least(have, need, ok):
    assert p.version_at_least(have, need) is ok


def test_version_at_least_refuses_garbage():
    with pytest.raises(ValueError, match="cannot compare"):
        p.version_at_least("garbage", "24.0")


# ------------------------------------------------------------------ meminfo

MEMINFO = """\
MemTotal:       24596992 kB
MemFree:        12000000 kB
MemAvailable:    3145728 kB
Buffers:          100000 kB
Cached:          2000000 kB
HugePages_Total:       0
"""


def test_parse_meminfo():
    info = p.parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 24596992
    assert info["MemAvailable"] == 3145728
    assert info["HugePages_Total"] == 0


def _fake_proc(tmp_path, meminfo=MEMINFO):
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True, exist_ok=True)
    (root / "meminfo").write_text(meminfo)
    return root


def test_mem_available_uses_memavailable(tmp_path):
    assert p.mem_available_mb(str(_fake_proc(tmp_path))) == 3072


def test_mem_available_without_memavailable_sums_free_buffers_cached(tmp_path):
    old = "MemTotal: 2048000 kB\nMemFree: 102400 kB\nBuffers: 1024 kB\nCached: 1024 kB\n"
    assert p.mem_available_mb(str(_fake_proc(tmp_path, old))) == 102


def test_check_memory_error_names_host_and_numbers(tmp_path):
    findings, facts = p.check_memory("web1", 4096, str(_fake_proc(tmp_path)))
    assert facts == {"memory_available_mb": 3072}
    assert [f["severity"] for f in findings] == ["error"]
    assert findings[0]["message"].startswith("Only 3072 MB of RAM is available on web1; runbook section 1 needs 4096")
    assert "paycraft_preflight_min_memory_mb" in findings[0]["fix"]
    ok, _ = p.check_memory("web1", 3072, str(_fake_proc(tmp_path)))
    assert [f["severity"] for f in ok] == ["info"]


# ------------------------------------------------------------------ /proc/net/tcp

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:D431 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:D431 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
   3: 0F02000A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501 - the kernel's own line format
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:D432 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7777 1 0000000000000000 100 0 0 10 0
"""  # noqa: E501 - the kernel's own line format


def test_parse_proc_net_tcp_ipv4():
    socks = p.parse_proc_net_tcp(TCP)
    assert [(s["address"], s["port"], s["listening"], s["inode"], s["uid"]) for s in socks] == [
        ("127.0.0.1", 54321, True, 1111, 0),
        ("0.0.0.0", 3000, True, 2222, 1000),  # noqa: S104 - parsed text, nothing binds
        ("127.0.0.1", 54321, False, 3333, 0),  # an established connection, not a listener
        ("10.0.2.15", 22, True, 4444, 0),
    ]


def test_parse_proc_net_tcp_ipv6():
    socks = p.parse_proc_net_tcp(TCP6)
    assert [(s["address"], s["port"], s["inode"]) for s in socks] == [
        ("::", 54322, 5555),
        ("::1", 8080, 6666),
        ("127.0.0.1", 8081, 7777),  # IPv4-mapped
    ]


def test_parse_proc_net_tcp_ignores_header_and_garbage():
    assert p.parse_proc_net_tcp("  sl  local_address rem_address st\nnot a line\n\n") == []


def test_parse_proc_net_tcp_reads_the_live_kernel_format():
    """The parser understands what this kernel writes: a socket we listen on is found with its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        listeners = p.tcp_listeners("/proc")
        assert port in listeners
        assert listeners[port][0]["address"] == "127.0.0.1"
        holders = p.socket_holders([listeners[port][0]["inode"]], "/proc")
        assert os.getpid() in [h["pid"] for hs in holders.values() for h in hs]


# ------------------------------------------------------------------ holders: a fake /proc tree


def _process(root, pid, comm, argv, socket_inodes):
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    os.symlink("/dev/null", d / "fd" / "0")
    os.symlink("pipe:[999]", d / "fd" / "1")
    for n, inode in enumerate(socket_inodes, start=3):
        os.symlink(f"socket:[{inode}]", d / "fd" / str(n))


@pytest.fixture
def proc_tree(tmp_path):
    root = _fake_proc(tmp_path)
    (root / "net" / "tcp").write_text(TCP)
    (root / "net" / "tcp6").write_text(TCP6)
    _process(root, 4242, "supabase", ["supabase", "start"], [1111, 3333])
    _process(root, 777, "docker-proxy", ["/usr/sbin/docker-proxy", "-proto", "tcp", "-host-port", "54322"], [5555])
    _process(root, 1234, "python3", ["python3", "-m", "http.server", "--password=hunter2", "3000"], [2222])
    (root / "self").mkdir()  # non-numeric entries are skipped
    (root / "99999").mkdir()  # a process that vanished (no fd dir)
    return root


def test_socket_holders_maps_inodes_to_processes(proc_tree):
    holders = p.socket_holders([1111, 2222, 5555, 4444], str(proc_tree))
    assert holders[1111] == [{"pid": 4242, "comm": "supabase", "cmdline": "supabase start"}]
    assert holders[5555][0]["comm"] == "docker-proxy"
    assert 4444 not in holders  # no process holds it (another namespace, or gone)


def test_cmdline_secrets_are_redacted(proc_tree):
    holders = p.socket_holders([2222], str(proc_tree))
    assert holders[2222][0]["cmdline"] == "python3 -m http.server --password=*** 3000"
    assert "hunter2" not in repr(holders)


def test_port_holders(proc_tree):
    info = p.port_holders([54321, 54322, 3000, 22, 54323], str(proc_tree))
    assert info[54321]["listening"] == ["127.0.0.1"]
    assert [h["pid"] for h in info[54321]["holders"]] == [4242]
    assert info[54322]["listening"] == ["::"]
    assert info[22]["holders"] == []
    assert info[54323] == {"listening": [], "inodes": [], "holders": []}


def test_check_ports_reports_every_busy_port_with_pid_process_and_fix(proc_tree):
    findings, facts = p.check_ports("web1", [54321, 3000, 22, 54323], "selfhost", str(proc_tree),
                                    docker="no-such-docker")
    errors = {f["message"].split()[1]: f for f in findings if f["severity"] == "error"}
    assert set(errors) == {"54321", "3000", "22"}
    assert errors["54321"]["message"] == "Port 54321 on web1 is already in use by pid 4242 (supabase: supabase start)."
    assert "lsof -iTCP:54321 -sTCP:LISTEN -n -P" in errors["54321"]["fix"]
    assert "supabase stop" in errors["54321"]["fix"]
    assert "docker-compose.yaml (kong.ports[0])" in errors["54321"]["fix"]
    assert "docker-compose.yaml (dashboard.ports[0])" in errors["3000"]["fix"]
    assert "socket inode 4444" in errors["22"]["message"]
    assert facts["ports"]["54323"]["free"] is True


def test_check_ports_docker_publisher_without_docker_cli_is_not_accepted(proc_tree):
    """docker-proxy holds the port but the stack's container cannot be confirmed: an error, never a silent OK."""
    findings, _ = p.check_ports("web1", [54322], "selfhost", str(proc_tree), docker="no-such-docker")
    assert [f["severity"] for f in findings] == ["error"]
    assert "pid 777 (docker-proxy)" in findings[0]["message"]


def test_nearest_existing(tmp_path):
    assert p.nearest_existing(str(tmp_path / "a" / "b" / "c")) == str(tmp_path)
    assert p.nearest_existing(str(tmp_path)) == str(tmp_path)


def test_check_disk_measures_nearest_parent(tmp_path):
    findings, facts = p.check_disk("web1", 0, [str(tmp_path / "not" / "yet")])
    entry = facts["disk"][str(tmp_path / "not" / "yet")]
    assert entry["measured_at"] == str(tmp_path)
    assert findings[0]["severity"] == "info"
    # the second measurement's own figure: free space moves between two calls on a busy machine
    bad, bad_facts = p.check_disk("web1", 10**9, [str(tmp_path)])
    free = bad_facts["disk"][str(tmp_path)]["free_gb"]
    assert bad[0]["severity"] == "error"
    assert bad[0]["message"].startswith(f"Only {p._gb(free)} GB of disk is free for {tmp_path} on web1")


def test_check_disk_message_and_fact_give_one_figure(tmp_path, monkeypatch):
    # 66.254 GiB: rounded once to the fact (66.25) and again for the message it used to read 66.3 beside 66.25
    monkeypatch.setattr(p, "free_bytes", lambda path: int(66.254 * 1024**3))
    findings, facts = p.check_disk("web1", 10**9, [str(tmp_path)])
    assert facts["disk"][str(tmp_path)]["free_gb"] == 66.25
    assert findings[0]["message"].startswith(f"Only 66.2 GB of disk is free for {tmp_path} on web1")


def test_check_tools(tmp_path):
    findings, facts = p.check_tools("web1", ["sh", "paycraft-no-such-tool"])
    assert facts["tools"]["paycraft-no-such-tool"] is None
    assert [f["message"] for f in findings] == [
        "paycraft-no-such-tool is not on the PATH on web1 (listed in paycraft_preflight_required_tools)."]


def test_check_python_modules_managed_is_info_unmanaged_is_error():
    info, _ = p.check_python_modules("web1", ["paycraft_no_such_module"], managed=True)
    assert [f["severity"] for f in info] == ["info"]
    assert "will be installed by the docker role" in info[0]["message"]
    err, facts = p.check_python_modules("web1", ["paycraft_no_such_module", "json"], managed=False)
    assert facts["python_modules"] == {"paycraft_no_such_module": False, "json": True}
    assert [f["severity"] for f in err] == ["error", "info"]


def test_failure_message_one_line_per_error():
    findings = [
        p.finding("a", "error", "A is wrong on h.", "Do x."),
        p.finding("b", "info", "B is fine."),
        p.finding("c", "error", "C is wrong on h.", "Do y."),
    ]
    assert p.failure_message("h", findings) == (
        "Preflight failed on h: 2 problem(s)\n- A is wrong on h. Do x.\n- C is wrong on h. Do y.")
    assert p.report_lines(findings)[1] == "[INFO] b: B is fine."
    with pytest.raises(ValueError):
        p.finding("x", "fatal", "?")


def test_multiline_command_lines_stay_on_one_line(tmp_path):
    root = _fake_proc(tmp_path)
    (root / "net" / "tcp").write_text(TCP)
    _process(root, 55, "python3", ["python3", "-c", "import socket\nprint(1)\tx"], [1111])
    holders = p.socket_holders([1111], str(root))
    assert holders[1111][0]["cmdline"] == "python3 -c import socket\\nprint(1)\\tx"
    line = p.finding_line(p.finding("x", "error", "two\nlines", "fix\x07"))
    assert line == "two\\nlines fix\\x07"


# -------------------------------------------------------------------- python


@pytest.mark.parametrize("version", ["3.8.10", (3, 8, 18), "3.6.8", "2.7.18"])
def test_a_python_older_than_3_9_is_one_error_line_with_the_fix(version):
    findings, facts = p.check_python("web1", version, "/usr/bin/python3")
    assert [f["severity"] for f in findings] == [p.ERROR]
    shown = version if isinstance(version, str) else ".".join(map(str, version))
    assert p.report_lines(findings) == [
        f"[ERROR] python: Python {shown} (/usr/bin/python3) on web1 is older than 3.9, the oldest the collection's "
        "modules run on. Install python3.9+ on the host and set ansible_python_interpreter to it "
        "(for example ansible_python_interpreter=/usr/bin/python3.9 in the inventory)."
    ]
    assert facts == {"python": {"version": shown, "interpreter": "/usr/bin/python3"}}


@pytest.mark.parametrize("version", ["3.9.0", "3.10.12", (3, 11, 2), "3.14.0rc1"])
def test_python_3_9_and_later_is_info(version):
    findings, _ = p.check_python("web1", version, "/usr/bin/python3")
    assert [f["severity"] for f in findings] == [p.INFO]


def test_an_unreadable_python_version_is_an_error():
    findings, facts = p.check_python("web1", "unknown", None)
    assert findings[0]["severity"] == p.ERROR and "cannot be read ('unknown')" in findings[0]["message"]
    assert facts["python"]["version"] is None


def test_by_default_the_running_interpreter_is_checked():
    findings, facts = p.check_python("web1")
    assert facts["python"] == {"version": ".".join(map(str, sys.version_info[:3])), "interpreter": sys.executable}
    assert findings[0]["severity"] == p.INFO


def test_the_preflight_role_checks_the_same_minimum():
    """The role checks the facts before any module runs (a module cannot run on an older Python)."""
    checks = (REPO / "roles" / "preflight" / "tasks" / "checks.yml").read_text(encoding="utf-8")
    assert f"is version('{p.format_version(p.MIN_PYTHON)}', '<')" in checks
    assert " ".join(p.PYTHON_FIX.split()) in " ".join(checks.split())


def test_a_busy_80_or_443_names_the_tls_proxy_not_a_compose_port():
    for port in (80, 443):
        fix = p._port_fix(port)
        assert f"lsof -iTCP:{port} -sTCP:LISTEN -n -P" in fix
        assert "paycraft_tls_enabled" in fix
        assert "docker-compose.yaml" not in fix
