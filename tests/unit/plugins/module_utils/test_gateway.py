"""The collection's Kong file with the API-key check (plugins/module_utils/gateway.py), without Ansible.

What the gateway then answers (401 without a key, the anon key through, another host's key 401) is tested
on converged hosts (molecule/fleet) and against the reference gateway's nginx in
tests/integration/reference/test_images.py.
"""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from ansible_collections.paycraft.selfhost.plugins.module_utils import gateway, release_check
from paycraft_testlib import REPO

RELEASE_KONG = REPO / "reference" / "release" / "base" / "infra" / "selfhost" / "kong.yml"
UPSTREAM_KONG = REPO / "reference" / "release" / "v1.2.0-upstream-shape" / "files" / "infra" / "selfhost" / "kong.yml"
ANON, SERVICE = "anon.jwt.value", "service.jwt.value"


def release_kong() -> dict:
    return yaml.safe_load(RELEASE_KONG.read_text())


def plugins_of(config, name):
    service = next(s for s in config["services"] if s["name"] == name)
    return {p["name"]: p.get("config") for p in service.get("plugins") or []}


def test_rest_and_auth_check_keys_functions_stay_open():
    out = gateway.with_key_check(release_kong(), ANON, SERVICE)
    assert plugins_of(out, "rest-v1") == {"key-auth": {"hide_credentials": True},
                                         "acl": {"hide_groups_header": True, "allow": ["admin", "anon"]}}
    assert plugins_of(out, "auth-v1")["key-auth"] == {"hide_credentials": False}
    assert plugins_of(out, "functions-v1") == {}
    described = gateway.describe(out)
    assert sorted(described["checked_routes"]) == ["/auth/v1/", "/rest/v1/"]
    assert "/functions/v1/" in described["open_routes"]
    assert described["consumers"] == ["anon", "service_role"]


def test_consumers_hold_the_keys_with_supabase_groups():
    out = gateway.with_key_check(release_kong(), ANON, SERVICE)
    assert out["consumers"] == [
        {"username": "anon", "keyauth_credentials": [{"key": ANON}], "acls": [{"group": "anon"}]},
        {"username": "service_role", "keyauth_credentials": [{"key": SERVICE}], "acls": [{"group": "admin"}]},
    ]


def test_browser_links_of_gotrue_get_open_routes_to_the_auth_service():
    out = gateway.with_key_check(release_kong(), ANON, SERVICE)
    opened = {s["name"]: s for s in out["services"] if s["name"].startswith("auth-v1-open")}
    assert sorted(opened) == ["auth-v1-open-authorize", "auth-v1-open-callback", "auth-v1-open-verify"]
    assert opened["auth-v1-open-verify"]["url"] == "http://auth:9999/verify"
    assert opened["auth-v1-open-verify"]["routes"][0]["paths"] == ["/auth/v1/verify"]
    assert "plugins" not in opened["auth-v1-open-verify"]
    narrower = gateway.with_key_check(release_kong(), ANON, SERVICE, open_paths=["/auth/v1/verify"])
    assert [s["name"] for s in narrower["services"] if s["name"].startswith("auth-v1-open")] == ["auth-v1-open-verify"]


def test_the_release_file_is_not_modified_and_a_second_pass_gives_the_same():
    kong = release_kong()
    before = yaml.safe_dump(kong)
    once = gateway.with_key_check(kong, ANON, SERVICE)
    assert yaml.safe_dump(kong) == before
    assert gateway.with_key_check(once, ANON, SERVICE) == once


def test_release_consumers_of_the_same_names_are_replaced_others_kept():
    kong = release_kong()
    kong["consumers"] = [{"username": "anon", "keyauth_credentials": [{"key": "$SUPABASE_ANON_KEY"}]},
                         {"username": "partner", "keyauth_credentials": [{"key": "partner-key"}]}]
    out = gateway.with_key_check(kong, ANON, SERVICE)
    assert [c["username"] for c in out["consumers"]] == ["partner", "anon", "service_role"]
    assert out["consumers"][1]["keyauth_credentials"] == [{"key": ANON}]


def test_the_gap_filled_upstream_file_gets_the_check_too():
    filled = release_check.kong_with_rest(yaml.safe_load(UPSTREAM_KONG.read_text()))
    out = gateway.with_key_check(filled, ANON, SERVICE)
    rest = next(s for s in out["services"] if "/rest/v1/" in gateway._route_paths(s))
    assert rest["url"] == "http://rest:3000/"
    assert {p["name"] for p in rest["plugins"]} == {"key-auth", "acl"}


@pytest.mark.parametrize("anon, service, message", [
    ("", SERVICE, "both needed"),
    (ANON, ANON, "the same value"),
])
def test_refuses_missing_or_equal_keys(anon, service, message):
    with pytest.raises(gateway.GatewayError, match=message):
        gateway.with_key_check(release_kong(), anon, service)


def test_refuses_a_file_without_rest_or_auth_routes():
    kong = {"_format_version": "3.0", "services": [
        {"name": "functions-v1", "url": "http://edge-runtime:9000/", "routes": [{"paths": ["/functions/v1/"]}]}]}
    with pytest.raises(gateway.GatewayError, match="nothing to put the key check on"):
        gateway.with_key_check(kong, ANON, SERVICE)


def test_render_is_yaml_that_reads_back_the_same():
    out = gateway.with_key_check(release_kong(), ANON, "we'ird: \"key\" #x")
    text = gateway.render(out, "managed by ansible\nsecond line")
    assert text.startswith("# managed by ansible\n# second line\n")
    assert yaml.safe_load(text) == out
    assert gateway.render(out, "managed by ansible\nsecond line") == text


def test_mask_text_hides_every_key():
    out = gateway.with_key_check(release_kong(), ANON, SERVICE)
    rendered = gateway.render(out)
    text = gateway.mask_text(rendered)
    assert ANON not in text and SERVICE not in text
    assert text.count(gateway.MASKED) == 2
    assert ANON in rendered  # mask_text() returns a new text


def test_the_reference_gateway_accepts_the_file():
    spec = importlib.util.spec_from_file_location("kong_render", REPO / "reference" / "images" / "kong" / "render.py")
    render_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_mod)
    out = yaml.safe_load(gateway.render(gateway.with_key_check(release_kong(), ANON, SERVICE)))
    nginx = render_mod.render(out, "0.0.0.0:8000")
    assert "location ^~ /auth/v1/verify {" in nginx
    # the two checked locations, each with its acl map; the open links without a key check
    assert nginx.count('return 401 \'{"message":"No API key found in request"}\'') == 2
    assert "map $kong_consumer $kong_acl_1 {" in nginx and "map $kong_consumer $kong_acl_2 {" not in nginx
    verify = nginx.split("location ^~ /auth/v1/verify {")[1].split("}")[0]
    assert "$kong_key" not in verify


def test_kong_mount_target_from_the_compose_file():
    compose = {"services": {"db": {"image": "x"}, "kong": {"environment": {"KONG_DECLARATIVE_CONFIG": "/k/kong.yml"}}}}
    assert release_check.kong_mount_target(compose) == {"service": "kong", "path": "/k/kong.yml"}
    listed = {"services": {"gw": {"environment": ["KONG_DECLARATIVE_CONFIG=/home/kong/kong.yml"]}}}
    assert release_check.kong_mount_target(listed) == {"service": "gw", "path": "/home/kong/kong.yml"}
    assert release_check.kong_mount_target({"services": {"db": {}}}) is None
