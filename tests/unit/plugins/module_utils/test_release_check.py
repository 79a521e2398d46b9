"""release_check on the reference release's real trees (git archive of its tags), no Ansible run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import release_check as rc

REPO = Path(__file__).resolve().parents[4]
RELEASE = REPO / "reference" / "build" / "paycraft.git"
SRC = "/opt/paycraft/src"
MIGRATIONS = f"{SRC}/server/migrations"
ENV_KEYS = ["PAYCRAFT_DB_PASSWORD", "PAYCRAFT_JWT_SECRET", "PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY",
            "PAYCRAFT_TOKEN_ENCRYPTION_KEY", "PAYCRAFT_OAUTH_STATE_SECRET"]


def run(argv, cwd=None, timeout=None):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def origin():
    if not (RELEASE / "HEAD").is_file() and not (RELEASE / ".git").exists():
        pytest.skip("the reference release (bash reference/make-release.sh)")
    return f"file://{RELEASE}"


def extract(origin, tag, tmp_path, checkout=None):
    dest = tmp_path / tag
    dest.mkdir()
    commit = rc.extract_release(run, origin, tag, str(dest), checkout=checkout)
    return dest, commit


def check(dest, migrations_dir=MIGRATIONS, **fill):
    tree = rc.Tree(str(dest), "infra/selfhost", SRC)
    compose = yaml.safe_load((dest / "infra/selfhost/docker-compose.yaml").read_text())
    kong = yaml.safe_load((dest / "infra/selfhost/kong.yml").read_text())
    kong_rel = rc.kong_file_of(tree, compose)
    findings, gaps = rc.check_release(tree, compose, kong, compose_file="docker-compose.yaml", kong_rel=kong_rel,
                                      migrations_dir=migrations_dir, **fill)
    return [f.line() for f in findings], gaps, tree, compose, kong


def test_a_good_release_has_no_finding_and_no_gap(origin, tmp_path):
    dest, commit = extract(origin, "v1.1.0", tmp_path)
    assert len(commit) == 40
    assert not (dest / ".paycraft-release-git").exists() and not (dest / ".paycraft-release.tar").exists()
    lines, gaps, tree, compose, _ = check(dest)
    assert lines == []
    assert rc.kong_file_of(tree, compose) == "infra/selfhost/kong.yml"
    assert gaps["rest"] == {"present": True, "setting": "auto", "fill": False, "variable": "paycraft_stack_fill_rest"}
    assert gaps["main"]["present"] and not gaps["main"]["fill"]
    assert gaps["main"]["release_path"] == "supabase/functions/main"
    # true fills even what the release has
    _, gaps, *_ = check(dest, fill_rest=True, fill_main="yes")
    assert gaps["rest"]["fill"] and gaps["main"]["fill"]


def test_upstream_shape_without_gap_filling_lists_the_three_defects(origin, tmp_path):
    dest, _ = extract(origin, "v1.2.0-upstream-shape", tmp_path)
    lines, gaps, *_ = check(dest, fill_rest="false", fill_main="false")
    assert len(lines) == 3, lines
    migrations, main, rest = lines
    assert migrations.startswith("server/migrations: a symlink to ../supabase/migrations, which the release "
                                 "does not contain. Fix: pin paycraft_version to a release that ships its "
                                 "migrations, or point paycraft_migrations_dir at them")
    assert main.startswith("infra/selfhost/docker-compose.yaml: service edge-runtime starts --main-service "
                           "/home/deno/functions/main, which is supabase/functions/main, missing from the release")
    assert "paycraft_stack_fill_main" in main
    assert rest.startswith("infra/selfhost/kong.yml: route rest-v1 (/rest/v1/) goes to http://db:3000/, where "
                           "nothing listens (db listens on 5432)")
    assert "paycraft_stack_fill_rest" in rest
    assert not gaps["rest"]["fill"] and not gaps["main"]["fill"]


def test_upstream_shape_with_gaps_filled_and_migrations_given(origin, tmp_path):
    dest, _ = extract(origin, "v1.2.0-upstream-shape", tmp_path)
    good, _ = extract(origin, "v1.1.0", tmp_path)
    lines, gaps, _, _, kong = check(dest, migrations_dir=str(good / "server" / "migrations"))
    assert lines == []
    assert gaps["rest"]["fill"] and not gaps["rest"]["present"]
    assert gaps["main"]["fill"] and not gaps["main"]["present"]
    assert gaps["main"]["service"] == "edge-runtime"
    assert gaps["main"]["command"] == ["start", "--main-service", rc.MAIN_MOUNT]
    filled = rc.kong_with_rest(kong)
    assert rc.rest_service_entry(filled)["url"] == "http://rest:3000/"
    assert rc.rest_service_entry(kong)["url"] == "http://db:3000/", "the release's config is not modified"
    # the migrations finding stays when only the gaps are filled
    lines, *_ = check(dest)
    assert len(lines) == 1 and lines[0].startswith("server/migrations: a symlink")


def test_migrations_outside_the_checkout(tmp_path, origin):
    dest, _ = extract(origin, "v1.1.0", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.sql").write_text("")
    assert "holds no *.sql migration file" in check(dest, migrations_dir=str(empty))[0][0]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    line = check(dest, migrations_dir=str(dangling))[0][0]
    assert line.startswith(f"paycraft_migrations_dir={dangling}: '{dangling}' is a symlink to '{tmp_path / 'nowhere'}'")
    assert "does not exist on this host" in line
    assert "does not exist" in check(dest, migrations_dir=str(tmp_path / "absent"))[0][0]


def test_extract_uses_the_checkout_without_changing_it(origin, tmp_path):
    checkout = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", origin, str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", "v1.0.0"], check=True)
    before = subprocess.run(["git", "-C", str(checkout), "for-each-ref"], capture_output=True, text=True).stdout
    dest, commit = extract(origin, "v1.2.0-upstream-shape", tmp_path, checkout=str(checkout))
    after = subprocess.run(["git", "-C", str(checkout), "for-each-ref"], capture_output=True, text=True).stdout
    assert before == after
    head = subprocess.run(["git", "-C", str(checkout), "describe", "--tags"], capture_output=True, text=True)
    assert head.stdout.strip() == "v1.0.0"
    assert os.path.islink(dest / "server" / "migrations")
    assert commit == subprocess.run(["git", "-C", str(checkout), "rev-parse", "v1.2.0-upstream-shape^{commit}"],
                                    capture_output=True, text=True).stdout.strip()


def test_extract_refuses_an_unknown_tag(origin, tmp_path):
    dest = tmp_path / "x"
    dest.mkdir()
    with pytest.raises(rc.ReleaseError, match=r"cannot fetch v9\.9\.9"):
        rc.extract_release(run, origin, "v9.9.9", str(dest))


def test_compose_paths_and_routes_a_release_breaks(origin, tmp_path):
    dest, _ = extract(origin, "v1.1.0", tmp_path)
    shutil.rmtree(dest / "dashboard")
    (dest / "infra/selfhost/kong.yml").unlink()
    kong = {"services": [{"name": "auth-v1", "url": "http://gotrue:9999/", "routes": [{"paths": ["/auth/v1/"]}]},
                         {"name": "functions-v1", "host": "edge-runtime", "port": 9000,
                          "routes": [{"paths": ["/functions/v1/"]}]}]}
    tree = rc.Tree(str(dest), "infra/selfhost", SRC)
    compose = yaml.safe_load((dest / "infra/selfhost/docker-compose.yaml").read_text())
    findings, _ = rc.check_release(tree, compose, kong, compose_file="docker-compose.yaml",
                                   kong_rel="infra/selfhost/kong.yml", migrations_dir=MIGRATIONS)
    lines = [f.line() for f in findings]
    assert any(line.startswith("infra/selfhost/docker-compose.yaml: service kong mounts ./kong.yml at "
                               "/home/kong/kong.yml: infra/selfhost/kong.yml, missing from the release")
               for line in lines)
    assert any("service dashboard mounts ../../dashboard at /app: dashboard, missing" in line for line in lines)
    assert any(line.startswith("infra/selfhost/kong.yml: route auth-v1 (/auth/v1/) goes to http://gotrue:9999/, "
                               "a host no compose service answers to") for line in lines)
    assert not any("functions-v1" in line for line in lines)
    assert len(lines) == 3, lines


def test_commands_and_fill_settings():
    assert rc.main_service_command("start --main-service=/x --port 9000", "/y") == \
        ["start", "--main-service=/y", "--port", "9000"]
    assert rc.main_service_path(["start", "--main-service", "/home/deno/functions/main"]) == "/home/deno/functions/main"
    assert rc.main_service_path("npm start") is None
    assert rc.fill_wanted("auto", False) and not rc.fill_wanted("auto", True)
    assert rc.fill_wanted(True, True) and not rc.fill_wanted("off", False)
    with pytest.raises(ValueError):
        rc.normalize_fill("sometimes")
    assert rc.validation_env({"A": "1", "B": ""}, ["B", "C"]) == {"A": "1", "B": rc.PLACEHOLDER, "C": rc.PLACEHOLDER}
    assert rc.scrub("bad value s3cr3tvalue here", ["s3cr3tvalue"]) == "bad value ******** here"


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI with compose")
def test_docker_compose_config_with_the_rendered_env(origin, tmp_path):
    if run(["docker", "compose", "version"])[0] != 0:
        pytest.skip("docker compose")
    dest, _ = extract(origin, "v1.1.0", tmp_path)
    tree = rc.Tree(str(dest), "infra/selfhost", SRC)
    env = rc.validation_env({"PAYCRAFT_DB_PASSWORD": "hunter2-very-secret"}, ENV_KEYS)
    assert rc.compose_config_error(run, "docker", tree, "docker-compose.yaml", "selfhost", env, str(tmp_path)) is None
    env.pop("PAYCRAFT_OAUTH_STATE_SECRET")
    error = rc.compose_config_error(run, "docker", tree, "docker-compose.yaml", "selfhost", env, str(tmp_path))
    assert "PAYCRAFT_OAUTH_STATE_SECRET is required" in error
    assert "hunter2-very-secret" not in error
    assert not (tmp_path / ".paycraft-validation.env").exists()
