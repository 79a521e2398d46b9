"""The config role on this machine: idempotence, 0600, no secret at -vvv, validation, the DB password guard."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import jwt
import pytest
from ansible_collections.paycraft.selfhost.plugins.module_utils import envfile as ef

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"

SECRET_KEYS = [
    "PAYCRAFT_DB_PASSWORD",
    "PAYCRAFT_JWT_SECRET",
    "PAYCRAFT_ANON_KEY",
    "PAYCRAFT_SERVICE_ROLE_KEY",
    "PAYCRAFT_TOKEN_ENCRYPTION_KEY",
    "PAYCRAFT_OAUTH_STATE_SECRET",
    "PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY",
]
LICENSE = "PAYCRAFT-ENTERPRISE-LICENSE-7f3a9c1e2b4d-SIGNED-BLOB"
STRIPE = "sk_test_51Hintegration0000secretvalue"
LEGACY_PASSWORD = "legacy-password-from-runbook-01"


def _read(path: Path) -> dict:
    return ef.EnvFile.read(str(path)).as_dict()


def _assert_no_secret(output: str, values: dict, extra=()):
    for key in SECRET_KEYS:
        assert values[key], key
        assert values[key] not in output, f"{key} value leaked into the output"
    for secret in extra:
        assert secret not in output


def test_two_runs_changed_then_unchanged_without_secrets_in_vvv_output(config_run, tmp_path):
    selfhost = Path(config_run.base["paycraft_selfhost_dir"])
    selfhost.mkdir(parents=True)
    (selfhost / ".env.example").write_text(
        "PAYCRAFT_DB_PASSWORD=your-super-secret-password\nPAYCRAFT_JWT_SECRET=changeme\n"
        "GOTRUE_SITE_NAME=PayCraft\nSMTP_PASS=changeme\n"
    )
    # an installation done by hand with the runbook: its .env is adopted, then replaced by the link
    (selfhost / ".env").write_text(f"PAYCRAFT_DB_PASSWORD={LEGACY_PASSWORD}\nCUSTOM_FLAG=on\n")
    dump = tmp_path / "paycraft_env.json"
    project = f"selfhost-test-{uuid.uuid4().hex[:8]}"
    extra = {
        "paycraft_compose_project": project,
        "paycraft_platform_stripe_secret_key": STRIPE,
        "paycraft_platform_stripe_client_id": "ca_integration",
        "paycraft_api_url": "https://billing.example.com",
        "paycraft_config_extra_env": {"GOTRUE_DISABLE_SIGNUP": "false"},
        "paycraft_config_license_key": LICENSE,
        "paycraft_test_dump": str(dump),
    }

    first = config_run(extra, "-vvv", "--diff")
    assert first.rc == 0 and first.failed == 0, first.out[-4000:]
    assert first.changed >= 3  # config dir, env file, link, license

    env_file = Path(config_run.base["paycraft_config_dir"]) / "paycraft.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    values = _read(env_file)
    assert values["PAYCRAFT_DB_PASSWORD"] == LEGACY_PASSWORD
    assert values["CUSTOM_FLAG"] == "on" and values["GOTRUE_SITE_NAME"] == "PayCraft"
    assert values["GOTRUE_DISABLE_SIGNUP"] == "false" and "SMTP_PASS" not in values
    assert values["PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY"] == STRIPE
    assert values["PAYCRAFT_API_URL"] == "https://billing.example.com"
    assert values["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == values["NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY"]
    assert values["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == values["PAYCRAFT_ANON_KEY"]
    for key, role in (("PAYCRAFT_ANON_KEY", "anon"), ("PAYCRAFT_SERVICE_ROLE_KEY", "service_role")):
        assert jwt.decode(values[key], values["PAYCRAFT_JWT_SECRET"], algorithms=["HS256"])["role"] == role
    assert (selfhost / ".env").is_symlink() and (selfhost / ".env").resolve() == env_file.resolve()
    backup = Path(config_run.base["paycraft_config_dir"]) / "selfhost.env.before-ansible"
    assert LEGACY_PASSWORD in backup.read_text() and stat.S_IMODE(backup.stat().st_mode) == 0o600
    lic = selfhost / "LICENSE-ENTERPRISE.key"
    assert lic.read_text() == LICENSE and stat.S_IMODE(lic.stat().st_mode) == 0o600
    public = {k: values[k] for k in ("PAYCRAFT_ANON_KEY", "PAYCRAFT_API_URL", "PAYCRAFT_DASHBOARD_URL")}
    assert json.loads(dump.read_text()) == public  # paycraft_env: never a server secret
    assert "PAYCRAFT_JWT_SECRET=******** (new)" in first.out
    _assert_no_secret(first.out, values, extra=[LICENSE])

    content = env_file.read_bytes()
    second = config_run(extra, "-vvv", "--diff")
    assert second.rc == 0 and second.changed == 0, second.out[-4000:]
    assert env_file.read_bytes() == content  # nothing re-minted: iat/exp unchanged
    _assert_no_secret(second.out, values, extra=[LICENSE])

    check = config_run(extra, "--check", "--diff")
    assert check.rc == 0 and check.changed == 0, check.out[-4000:]

    # a new JWT secret invalidates the kept keys: refused until the operator asks for re-signing
    new_secret = "rotated-jwt-secret-for-the-integration-test-0001"
    rotate = dict(extra, paycraft_jwt_secret=new_secret)
    refused = config_run(rotate, json_output=True)
    assert refused.rc != 0 and env_file.read_bytes() == content
    msg = refused.task_result()["msg"].splitlines()
    assert msg == [
        f"localhost: {key} in {env_file} is not signed by the current PAYCRAFT_JWT_SECRET, so the SDK and dashboard "
        'get "401 Unauthorized" (runbook section 7: the JWT secret changed between when the anon key was generated '
        "and now); re-sign the anon and service role keys: run the playbook again with -e "
        "paycraft_config_resign_keys=true (the new keys must then replace the old ones in every SDK and app)."
        for key in ("PAYCRAFT_ANON_KEY", "PAYCRAFT_SERVICE_ROLE_KEY")
    ]
    resigned = config_run(dict(rotate, paycraft_config_resign_keys=True), "-vvv")
    assert resigned.rc == 0 and resigned.changed >= 1, resigned.out[-4000:]
    after = _read(env_file)
    assert after["PAYCRAFT_DB_PASSWORD"] == LEGACY_PASSWORD
    assert jwt.decode(after["PAYCRAFT_ANON_KEY"], new_secret, algorithms=["HS256"])["role"] == "anon"
    assert after["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == after["PAYCRAFT_ANON_KEY"] != values["PAYCRAFT_ANON_KEY"]
    _assert_no_secret(resigned.out, after, extra=[new_secret, LICENSE])


def test_every_bad_input_reported_at_once_before_anything_changes(config_run, tmp_path):
    bad = {
        "paycraft_db_password": "p@ss:w/rd",
        "paycraft_jwt_secret": "too-short",
        "paycraft_token_encryption_key": "abcd",
        "paycraft_oauth_state_secret": "not-hex-at-all",
        "paycraft_platform_stripe_secret_key": "pk_live_123",
        "paycraft_platform_stripe_client_id": "client_123",
        "paycraft_api_url": "billing.example.com",
        "paycraft_dashboard_url": "",
        "paycraft_config_extra_env": {"NEXT_PUBLIC_SUPABASE_ANON_KEY": "other", "9LIVES": "x"},
        "paycraft_config_license_key": "lic",
        "paycraft_config_license_file": str(tmp_path / "no-such-license.key"),
        "paycraft_compose_project": f"selfhost-test-{uuid.uuid4().hex[:8]}",
    }
    run = config_run(bad, json_output=True)
    assert run.rc != 0 and run.changed == 0
    assert run.task_result()["msg"].splitlines() == [
        "localhost: set paycraft_config_license_key or paycraft_config_license_file, not both.",
        f"localhost: paycraft_config_license_file {tmp_path}/no-such-license.key is not a file on the controller; "
        "expected the LICENSE-ENTERPRISE.key you received from MobileByteLabs.",
        "localhost: paycraft_dashboard_url (PAYCRAFT_DASHBOARD_URL) must not be empty; expected the public URL of "
        "the dashboard, such as http://localhost:3000 (runbook section 3).",
        "localhost: paycraft_db_password (PAYCRAFT_DB_PASSWORD) must be at least 16 characters of A-Z a-z 0-9 . _ ~ - "
        "only (the compose file puts it in postgres://user:PASSWORD@db URLs, where / + = @ : ? # % break the URL).",
        "localhost: paycraft_jwt_secret (PAYCRAFT_JWT_SECRET) must be at least 32 characters (as `openssl rand "
        "-base64 32` prints).",
        "localhost: paycraft_token_encryption_key (PAYCRAFT_TOKEN_ENCRYPTION_KEY) must be exactly 64 hex characters "
        "(32 bytes for AES-256-GCM, as `openssl rand -hex 32` prints).",
        "localhost: paycraft_oauth_state_secret (PAYCRAFT_OAUTH_STATE_SECRET) must be at least 64 hex characters (as "
        "`openssl rand -hex 32` prints).",
        "localhost: paycraft_platform_stripe_secret_key (PAYCRAFT_PLATFORM_STRIPE_SECRET_KEY) must be empty or start "
        "with sk_live_ or sk_test_ (your Stripe platform secret key; leave it blank if you only use Razorpay or "
        "Custom).",
        "localhost: paycraft_platform_stripe_client_id (PAYCRAFT_PLATFORM_STRIPE_CLIENT_ID) must be empty or start "
        "with ca_ (your Stripe Connect platform OAuth client id).",
        "localhost: paycraft_api_url (PAYCRAFT_API_URL) must be an http:// or https:// URL such as "
        "http://localhost:54321 (a host, an optional port and path; no credentials, query or fragment).",
        "localhost: paycraft_config_extra_env.NEXT_PUBLIC_SUPABASE_ANON_KEY must equal PAYCRAFT_ANON_KEY (runbook "
        "section 3: the anon key is mirrored into NEXT_PUBLIC_SUPABASE_ANON_KEY and "
        "NEXT_PUBLIC_PAYCRAFT_SUPABASE_ANON_KEY); remove it, the mirror is written for you.",
        "localhost: paycraft_config_extra_env has invalid variable names 9LIVES; expected letters, digits and _ "
        "(not starting with a digit).",
    ]
    assert not Path(config_run.base["paycraft_config_dir"]).exists()


def test_service_role_key_in_next_public_is_refused(config_run):
    secret = "s" * 44
    service = jwt.encode({"role": "service_role", "iss": "supabase", "iat": 1, "exp": 4_000_000_000}, secret,
                         algorithm="HS256")
    run = config_run({
        "paycraft_jwt_secret": secret,
        "paycraft_service_role_key": service,
        "paycraft_config_extra_env": {"NEXT_PUBLIC_SUPABASE_SERVICE_KEY": service},
        "paycraft_compose_project": f"selfhost-test-{uuid.uuid4().hex[:8]}",
    }, json_output=True)
    assert run.rc != 0
    assert run.task_result()["msg"] == (
        "localhost: paycraft_config_extra_env.NEXT_PUBLIC_SUPABASE_SERVICE_KEY holds PAYCRAFT_SERVICE_ROLE_KEY "
        "(runbook section 3: PAYCRAFT_SERVICE_ROLE_KEY bypasses RLS and It MUST NOT leak into NEXT_PUBLIC_*); remove "
        "it, NEXT_PUBLIC_* values are shipped to every browser."
    )
    assert service not in run.out and secret not in run.out


@pytest.mark.docker
def test_db_password_guard_with_a_real_volume(config_run, docker_engine):
    project = f"selfhost-test-{uuid.uuid4().hex[:8]}"
    volume = f"{project}_paycraft-db"
    env_file = Path(config_run.base["paycraft_config_dir"]) / "paycraft.env"
    first = config_run({"paycraft_compose_project": project})
    assert first.rc == 0, first.out[-3000:]
    content = env_file.read_bytes()
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    try:
        refused = config_run({"paycraft_compose_project": project, "paycraft_db_password": "a-brand-new-password-42"},
                             json_output=True)
        assert refused.rc != 0 and env_file.read_bytes() == content
        assert refused.task_result()["msg"] == (
            f"localhost: paycraft_db_password (PAYCRAFT_DB_PASSWORD) differs from the one in {env_file}, but the "
            f"database volume {volume} already exists: Postgres keeps the password it was initialised with, so a new "
            "one written here would lock the services out. Next, to change it with the data intact: ansible-playbook "
            "playbooks/rotate.yml -l localhost -e paycraft_rotate_secret=db_password -e "
            "paycraft_rotate_confirm=db_password (add --check first to see what it would change; it takes the new "
            "value from paycraft_db_password, or generates one). To keep the current password instead: leave "
            "paycraft_db_password empty. (The runbook's section 7 fix, recreating the volume, destroys the data: "
            f"docker compose down; docker volume rm {volume}; docker compose up -d db. This destroys all "
            "subscriptions data. Take a backup first.)"
        )
        kept = config_run({"paycraft_compose_project": project})
        assert kept.rc == 0 and kept.changed == 0, kept.out[-3000:]
        # the env file is lost but the volume is there: a new password would lock Postgres out
        env_file.unlink()
        lost = config_run({"paycraft_compose_project": project}, json_output=True)
        assert lost.rc != 0 and not env_file.exists()
        assert lost.task_result()["msg"].startswith(
            f"localhost: the database volume {volume} already exists but no PAYCRAFT_DB_PASSWORD is known"
        )
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)


def test_validation_alone_and_check_mode_change_nothing_on_a_fresh_host(config_run):
    project = {"paycraft_compose_project": f"selfhost-test-{uuid.uuid4().hex[:8]}"}
    alone = config_run(project, playbook=PLAYBOOKS / "validate_only.yml")
    assert alone.rc == 0 and alone.changed == 0, alone.out[-3000:]
    bad = config_run(dict(project, paycraft_platform_stripe_client_id="id_1"), playbook=PLAYBOOKS / "validate_only.yml",
                     json_output=True)
    assert bad.rc != 0
    assert bad.task_result()["msg"] == (
        "localhost: paycraft_platform_stripe_client_id (PAYCRAFT_PLATFORM_STRIPE_CLIENT_ID) must be empty or start "
        "with ca_ (your Stripe Connect platform OAuth client id)."
    )
    check = config_run(project, "--check")
    assert check.rc == 0 and check.changed >= 1, check.out[-3000:]
    assert not Path(config_run.base["paycraft_config_dir"]).exists()


def test_engine_unreachable_falls_back_to_the_data_root(config_run, tmp_path):
    project = f"selfhost-test-{uuid.uuid4().hex[:8]}"
    data_root = tmp_path / "docker-data"
    (data_root / "volumes").mkdir(parents=True)
    env_file = Path(config_run.base["paycraft_config_dir"]) / "paycraft.env"
    unreachable = {"paycraft_compose_project": project, "paycraft_config_docker_host": f"unix://{tmp_path}/none.sock",
                   "paycraft_config_docker_data_root": str(data_root)}
    assert config_run(unreachable).rc == 0
    content = env_file.read_bytes()
    (data_root / "volumes" / f"{project}_paycraft-db").mkdir()
    refused = config_run(dict(unreachable, paycraft_db_password="a-brand-new-password-42"), json_output=True)
    assert refused.rc != 0 and env_file.read_bytes() == content
    assert "Next, to change it with the data intact: ansible-playbook playbooks/rotate.yml" in (
        refused.task_result()["msg"])
    (data_root / "volumes" / f"{project}_paycraft-db").rmdir()  # the volume cannot exist: the change is allowed
    allowed = config_run(dict(unreachable, paycraft_db_password="a-brand-new-password-42"))
    assert allowed.rc == 0 and allowed.changed >= 1
    assert _read(env_file)["PAYCRAFT_DB_PASSWORD"] == "a-brand-new-password-42"


@pytest.mark.docker
def test_compose_reads_the_env_through_the_link_in_the_reference_release(config_run, docker_engine):
    """The runbook's manual `docker compose ...` in infra/selfhost sees every value the role wrote."""
    release = Path(__file__).resolve().parents[3] / "reference" / "release" / "base" / "infra" / "selfhost"
    assert (release / "docker-compose.yaml").is_file(), f"the repository's reference release is missing: {release}"
    selfhost = Path(config_run.base["paycraft_selfhost_dir"])
    selfhost.parent.mkdir(parents=True)
    shutil.copytree(release, selfhost)
    project = f"selfhost-test-{uuid.uuid4().hex[:8]}"
    run = config_run({"paycraft_compose_project": project})
    assert run.rc == 0, run.out[-3000:]
    values = _read(Path(config_run.base["paycraft_config_dir"]) / "paycraft.env")
    proc = subprocess.run(["docker", "compose", "-p", project, "config", "--format", "json"], cwd=selfhost,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # every :?required variable is set
    services = json.loads(proc.stdout)["services"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == values["PAYCRAFT_DB_PASSWORD"]
    assert services["db"]["environment"]["JWT_SECRET"] == values["PAYCRAFT_JWT_SECRET"]
    urls = [v for s in services.values() for v in (s.get("environment") or {}).values()
            if isinstance(v, str) and v.startswith("postgres://")]
    assert urls and all(f":{values['PAYCRAFT_DB_PASSWORD']}@db:" in u for u in urls)
    dashboard = services["dashboard"]["environment"]
    assert dashboard["NEXT_PUBLIC_SUPABASE_ANON_KEY"] == values["PAYCRAFT_ANON_KEY"]
    assert values["PAYCRAFT_SERVICE_ROLE_KEY"] not in [v for k, v in dashboard.items() if k.startswith("NEXT_PUBLIC_")]
