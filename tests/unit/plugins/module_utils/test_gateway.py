"""The collection's Kong file with the API-key check (plugins/module_utils/gateway.py), without Ansible.

What the gateway then answers (401 without a key, the anon key through, another host's key 401) is tested
on converged hosts (molecule/fleet) and against the reference gateway's nginx in
tests/integration/reference/test_images.py.
"""

from __future__ import annotations

import importlib.util
import re

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
    assert plugins_of(out, "rest-v1") == {"key-auth": {"key_names": ["apikey"], "hide_credentials": True},
                                         "acl": {"hide_groups_header": True, "allow": ["admin", "anon"]}}
    assert plugins_of(out, "auth-v1")["key-auth"] == {"key_names": ["apikey"], "hide_credentials": False}
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


# ------------------------------------------------------------------ Kong 3.x's own schemas
# The facts below are Kong 3.x's field names and types, from Kong's public source (Kong/kong):
#   kong/plugins/key-auth/schema.lua   config: key_names (array of header names, required, default {"apikey"}),
#                                      hide_credentials, key_in_header, key_in_query, key_in_body,
#                                      run_on_preflight (booleans), anonymous, realm (strings)
#   kong/plugins/acl/schema.lua        config: allow, deny (arrays of strings; only_one_of and at_least_one_of
#                                      {allow, deny}), hide_groups_header, include_consumer_groups,
#                                      always_use_authenticated_groups (booleans)
#   kong/plugins/key-auth/daos.lua     keyauth_credentials: id, created_at, consumer, key (string), tags, ttl
#   kong/plugins/acl/daos.lua          acls: id, created_at, consumer, group (string, required), tags
#   kong/db/schema/entities/consumers.lua  id, created_at, updated_at, username, custom_id (strings), tags;
#                                      at_least_one_of {custom_id, username}; in a declarative file the
#                                      credentials nest under their consumer (keyauth_credentials, acls)
#   kong/db/schema/entities/plugins.lua    id, name, instance_name, created_at, updated_at, route, service,
#                                      consumer, config, protocols, enabled, tags, ordering
#   kong/db/declarative (format)       _format_version "3.0" (a string; "1.1" and "2.1" are still read)
BOOL, STR, STR_ARRAY = "boolean", "string", "list of strings"
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")  # typedefs.header_name: an HTTP token
PLUGIN_CONFIG = {
    "key-auth": {"key_names": STR_ARRAY, "hide_credentials": BOOL, "anonymous": STR, "key_in_header": BOOL,
                 "key_in_query": BOOL, "key_in_body": BOOL, "run_on_preflight": BOOL, "realm": STR},
    "acl": {"allow": STR_ARRAY, "deny": STR_ARRAY, "hide_groups_header": BOOL, "include_consumer_groups": BOOL,
            "always_use_authenticated_groups": BOOL},
}
PLUGIN_FIELDS = {"id", "name", "instance_name", "created_at", "updated_at", "route", "service", "consumer", "config",
                 "protocols", "enabled", "tags", "ordering"}
CONSUMER_FIELDS = {
    "id": STR, "created_at": "integer", "updated_at": "integer", "username": STR, "custom_id": STR,
    "tags": STR_ARRAY}
NESTED_CREDENTIALS = {"keyauth_credentials": {"id": STR, "created_at": "integer", "key": STR, "tags": STR_ARRAY,
                                              "ttl": "integer"},
                      "acls": {"id": STR, "created_at": "integer", "group": STR, "tags": STR_ARRAY}}
FORMAT_VERSIONS = ("3.0", "2.1", "1.1")


def _type_ok(value, kind):
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == STR:
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def kong3_problems(config):
    """What Kong 3.x would refuse in the plugins and consumers of a declarative file (the facts above)."""
    problems = []
    if str(config.get("_format_version")) not in FORMAT_VERSIONS or not isinstance(config["_format_version"], str):
        problems.append(f"_format_version {config.get('_format_version')!r}")
    plugins = [p for s in config.get("services") or [] for p in s.get("plugins") or []]
    plugins += [p for s in config.get("services") or [] for r in s.get("routes") or [] for p in r.get("plugins") or []]
    plugins += list(config.get("plugins") or [])
    for plugin in plugins:
        schema = PLUGIN_CONFIG.get(plugin.get("name"))
        problems += [f"{plugin.get('name')}: unknown field {f}" for f in set(plugin) - PLUGIN_FIELDS]
        if schema is None:
            continue
        conf = plugin.get("config") or {}
        for field, value in conf.items():
            if field not in schema:
                problems.append(f"{plugin['name']}: unknown config field {field}")
            elif not _type_ok(value, schema[field]):
                problems.append(f"{plugin['name']}: {field} is not a {schema[field]}: {value!r}")
        if plugin["name"] == "key-auth":
            bad = [k for k in conf.get("key_names", ["apikey"]) if not HEADER_NAME.match(k)]
            problems += [f"key-auth: key name {k!r} is not a header name" for k in bad]
        if plugin["name"] == "acl" and ("allow" in conf) == ("deny" in conf):
            problems.append("acl: exactly one of allow and deny")
    for consumer in config.get("consumers") or []:
        for field, value in consumer.items():
            if field in NESTED_CREDENTIALS:
                for cred in value:
                    for f, v in cred.items():
                        if f not in NESTED_CREDENTIALS[field] or not _type_ok(v, NESTED_CREDENTIALS[field][f]):
                            problems.append(f"consumer {consumer.get('username')}: {field}.{f} = {v!r}")
                if field == "acls" and not all(c.get("group") for c in value):
                    problems.append(f"consumer {consumer.get('username')}: an acl without a group")
            elif field not in CONSUMER_FIELDS or not _type_ok(value, CONSUMER_FIELDS[field]):
                problems.append(f"consumer: field {field} = {value!r}")
        if not (consumer.get("username") or consumer.get("custom_id")):
            problems.append("consumer without username or custom_id")
    return problems


@pytest.mark.parametrize("source", [RELEASE_KONG, UPSTREAM_KONG])
def test_the_file_matches_kong_3_schemas(source):
    kong = yaml.safe_load(source.read_text())
    if source == UPSTREAM_KONG:
        kong = release_check.kong_with_rest(kong)
    out = yaml.safe_load(gateway.render(gateway.with_key_check(kong, ANON, SERVICE)))
    assert kong3_problems(out) == []
    # what Supabase's own kong.yml sets, in Kong 3's names
    rest = plugins_of(out, "rest-v1")
    assert rest["key-auth"]["key_names"] == ["apikey"] and rest["key-auth"]["hide_credentials"] is True
    assert rest["acl"] == {"hide_groups_header": True, "allow": ["admin", "anon"]}
    assert [c["keyauth_credentials"][0]["key"] for c in out["consumers"]] == [ANON, SERVICE]


def test_the_schema_facts_catch_what_kong_3_refuses():
    """The checker itself: the names of older Kongs (whitelist, consumer credentials as flat fields) fail it."""
    bad = {"_format_version": 3.0, "services": [{"name": "rest-v1", "plugins": [
        {"name": "acl", "config": {"whitelist": ["anon"], "hide_groups_header": "yes"}},
        {"name": "key-auth", "config": {"key_names": "apikey", "hide_credentials": 1}}]}],
        "consumers": [{"username": "anon", "key": "x", "acls": [{"name": "anon"}]}, {"keyauth_credentials": []}]}
    problems = kong3_problems(bad)
    assert "_format_version 3.0" in problems
    assert "acl: unknown config field whitelist" in problems and "acl: exactly one of allow and deny" in problems
    assert "acl: hide_groups_header is not a boolean: 'yes'" in problems
    assert "key-auth: key_names is not a list of strings: 'apikey'" in problems
    assert "key-auth: hide_credentials is not a boolean: 1" in problems
    assert "consumer: field key = 'x'" in problems and "consumer anon: acls.name = 'anon'" in problems
    assert "consumer without username or custom_id" in problems


def test_a_release_file_without_format_version_gets_3_0():
    kong = release_kong()
    kong.pop("_format_version")
    assert gateway.with_key_check(kong, ANON, SERVICE)["_format_version"] == "3.0"
    kong["_format_version"] = "2.1"
    assert gateway.with_key_check(kong, ANON, SERVICE)["_format_version"] == "2.1"


def test_kong_mount_target_from_the_compose_file():
    compose = {"services": {"db": {"image": "x"}, "kong": {"environment": {"KONG_DECLARATIVE_CONFIG": "/k/kong.yml"}}}}
    assert release_check.kong_mount_target(compose) == {"service": "kong", "path": "/k/kong.yml"}
    listed = {"services": {"gw": {"environment": ["KONG_DECLARATIVE_CONFIG=/home/kong/kong.yml"]}}}
    assert release_check.kong_mount_target(listed) == {"service": "gw", "path": "/home/kong/kong.yml"}
    assert release_check.kong_mount_target({"services": {"db": {}}}) is None


# ------------------------------------------------------------------ the /functions/v1/ upstream switch (upgrade)
def test_the_functions_upstream_switches_to_another_host_and_back():
    checked = gateway.with_key_check(release_kong(), ANON, SERVICE)
    assert gateway.functions_upstream(checked) == ["http://edge-runtime:9000"]
    side = gateway.with_functions_upstream(checked, "edge-runtime-next")
    assert gateway.functions_upstream(side) == ["http://edge-runtime-next:9000"]
    service = next(s for s in side["services"] if s["name"] == "functions-v1")
    # scheme, port, trailing path and every other field kept; the other services untouched
    assert service["url"] == "http://edge-runtime-next:9000/" and service["read_timeout"] == 150000
    assert [s for s in side["services"] if s["name"] != "functions-v1"] == \
        [s for s in checked["services"] if s["name"] != "functions-v1"]
    assert gateway.functions_upstream(checked) == ["http://edge-runtime:9000"]  # the input is not modified
    back = gateway.with_functions_upstream(side, "edge-runtime")
    assert gateway.render(back) == gateway.render(checked)
    assert gateway.with_functions_upstream(checked, "") is checked


def test_the_switch_of_a_service_given_by_host_and_port():
    kong = {"services": [{"name": "fn", "protocol": "http", "host": "edge-runtime", "port": 9000,
                          "routes": [{"paths": ["/functions/v1"]}]},
                         {"name": "rest", "url": "http://rest:3000/", "routes": [{"paths": ["/rest/v1/"]}]}]}
    out = gateway.with_functions_upstream(kong, "edge-runtime-next")
    assert out["services"][0]["host"] == "edge-runtime-next" and out["services"][0]["port"] == 9000
    assert out["services"][1] == kong["services"][1]


@pytest.mark.parametrize("kong, host, message", [
    ({"services": [{"name": "rest", "url": "http://rest:3000/", "routes": [{"paths": ["/rest/v1/"]}]}]},
     "edge-runtime-next", "no service routes /functions/v1/"),
    ({"services": [{"name": "fn", "routes": [{"paths": ["/functions/v1/"]}]}]},
     "edge-runtime-next", "neither url nor host"),
    ({"services": []}, "edge runtime", "not a host name"),
    ({"services": []}, "edge/../x", "not a host name"),
])
def test_the_switch_refuses_what_it_cannot_do(kong, host, message):
    with pytest.raises(gateway.GatewayError, match=message):
        gateway.with_functions_upstream(kong, host)


def test_the_switched_file_keeps_the_write_hold_and_the_reference_gateway_proxies_to_it():
    checked = gateway.with_key_check(release_kong(), ANON, SERVICE)
    text = gateway.render(gateway.with_functions_upstream(checked, "edge-runtime-next"))
    spec = gateway.hold_spec("p" * 20, ["resolve_tenant"])
    held = gateway.text_with_hold(text, spec)
    assert gateway.text_hold(held)["pass"] == "p" * 20
    assert gateway.text_without_hold(held) == text
    assert gateway.functions_upstream(yaml.safe_load(held)) == ["http://edge-runtime-next:9000"]
    spec_ = importlib.util.spec_from_file_location("kong_render", REPO / "reference" / "images" / "kong" / "render.py")
    render_mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(render_mod)
    nginx = render_mod.render(yaml.safe_load(held), "0.0.0.0:8000")
    assert "edge-runtime-next" in nginx and '"edge-runtime"' not in nginx and " edge-runtime;" not in nginx
