"""module_utils/redact.py: URL passwords, the env file's secret values and JWT-looking strings masked."""

from __future__ import annotations

from ansible_collections.paycraft.selfhost.plugins.module_utils import redact as r

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIiwiaXNzIjoic3VwYWJhc2UifQ."
       "c2lnbmF0dXJlLW9mLXRoZS1zZXJ2aWNlLWtleQ")


def test_a_url_password_is_masked_and_the_rest_kept():
    url = "rest:https://paycraft:hunter2@backup.example.org:8000/repo"
    assert r.mask_url(url) == "rest:https://paycraft:********@backup.example.org:8000/repo"
    assert r.url_passwords(f"open {url} failed") == ["hunter2"]
    for plain in ("sftp:paycraft@backup.example.org:/srv/restic", "/mnt/offsite", "s3:https://s3.example.org/b",
                  "user@host:/dir"):
        assert r.mask_url(plain) == plain and r.url_passwords(plain) == []


def test_the_secret_values_of_an_env_file_are_the_secret_looking_names():
    env = {"PAYCRAFT_DB_PASSWORD": "db-pass-123456", "PAYCRAFT_JWT_SECRET": "j" * 40, "PAYCRAFT_ANON_KEY": JWT,
           "PAYCRAFT_API_URL": "http://localhost:54321", "PAYCRAFT_STRIPE_WEBHOOK_SECRET": "whsec_abcdef",
           "DATABASE_URL": "postgres://postgres:db-pass-123456@db:5432/postgres", "SHORT_TOKEN": "abc",
           "PAYCRAFT_SITE_NAME": "billing"}
    values = r.secret_values(env)
    assert "http://localhost:54321" not in values and "billing" not in values and "abc" not in values
    assert {"db-pass-123456", "j" * 40, JWT, "whsec_abcdef"} <= set(values)
    assert values == sorted(values, key=len, reverse=True)


def test_redact_masks_secrets_jwts_and_url_passwords_in_log_lines():
    secrets = ["db-pass-123456", "whsec_abcdef"]
    line = (f'FATAL: password authentication failed (tried "db-pass-123456") token={JWT} '
            'hook secret whsec_abcdef url=postgres://postgres:other-pw@db:5432/postgres port 5432')
    out = r.redact(line, secrets)
    for secret in ("db-pass-123456", "whsec_abcdef", JWT, "other-pw", "eyJ"):
        assert secret not in out
    assert "FATAL: password authentication failed" in out and "port 5432" in out
    assert r.redact("nothing secret here", secrets) == "nothing secret here"


def test_container_logs_are_read_per_container_and_redacted(tmp_path):
    env = tmp_path / "paycraft.env"
    env.write_text(f"PAYCRAFT_DB_PASSWORD=db-pass-123456\nPAYCRAFT_SERVICE_ROLE_KEY={JWT}\nPAYCRAFT_PORT=5432\n")
    secrets = r.env_secrets(str(env))
    assert secrets == sorted([JWT, "db-pass-123456"], key=len, reverse=True)
    assert r.env_secrets(str(tmp_path / "missing.env")) == []
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[-1] == "paycraft_db":
            return 0, "listening on 5432\nusing password db-pass-123456\n", f"auth with {JWT}\n"
        return 1, "", "Error: No such container: paycraft_auth\n"

    logs = r.container_logs(["paycraft_db", "paycraft_auth"], 8, secrets, run)
    assert calls == [["docker", "logs", "--tail", "8", "paycraft_db"],
                     ["docker", "logs", "--tail", "8", "paycraft_auth"]]
    assert logs[0] == {"container": "paycraft_db", "rc": 0,
                       "lines": ["listening on 5432", "using password ********", "auth with ********"]}
    assert logs[1]["rc"] == 1 and logs[1]["lines"] == ["Error: No such container: paycraft_auth"]
