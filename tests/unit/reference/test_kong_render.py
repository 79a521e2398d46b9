"""The reference gateway's nginx configuration (reference/images/kong/render.py), rendered without nginx.

What nginx then does with it (401, 403, the consumer upstream) is tested against the real image in
tests/integration/reference/test_images.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("kong_render", REPO / "reference" / "images" / "kong" / "render.py")
render_mod = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(render_mod)

CONSUMERS = [
    {"username": "anon", "keyauth_credentials": [{"key": "anon-secret-key"}], "acls": [{"group": "anon"}]},
    {"username": "service_role", "keyauth_credentials": [{"key": "service-secret-key"}], "acls": [{"group": "admin"}]},
    {"username": "outsider", "keyauth_credentials": [{"key": "outsider-secret-key"}]},
]


def config(service_plugins=(), route_plugins=(), global_plugins=(), consumers=CONSUMERS):
    return {
        "_format_version": "3.0",
        "consumers": list(consumers),
        "plugins": list(global_plugins),
        "services": [
            {"name": "rest-v1", "url": "http://rest:3000/", "plugins": list(service_plugins),
             "routes": [{"name": "rest-v1-all", "paths": ["/rest/v1/"], "plugins": list(route_plugins)}]},
            {"name": "functions-v1", "url": "http://edge-runtime:9000/",
             "routes": [{"name": "functions-v1-all", "paths": ["/functions/v1/"]}]},
        ],
    }


def location(text: str, prefix: str) -> str:
    start = text.index(f"location ^~ {prefix} {{")
    return text[start:text.index("\n        }\n", start)]


def test_the_release_kong_file_renders_without_key_checks():
    release = yaml.safe_load((REPO / "reference/release/base/infra/selfhost/kong.yml").read_text())
    text = render_mod.render(release, "0.0.0.0:8000")
    assert "$kong_key" not in text and "$kong_consumer" not in text
    assert "proxy_pass http://$kong_upstream_" in location(text, "/rest/v1/")


def test_key_auth_and_acl_on_a_service(capsys):
    text = render_mod.render(config(service_plugins=[
        {"name": "key-auth", "config": {"hide_credentials": True}},
        {"name": "acl", "config": {"allow": ["admin", "anon"]}},
        {"name": "cors"},
    ]), "0.0.0.0:8000")
    rest = location(text, "/rest/v1/")
    assert "set $kong_key $http_apikey;" in rest and "set $kong_key $arg_apikey;" in rest
    assert "return 401 '{\"message\":\"No API key found in request\"}';" in rest
    assert "return 401 '{\"message\":\"Unauthorized\"}';" in rest
    assert "return 403 '{\"message\":\"You cannot consume this service\"}';" in rest
    assert 'proxy_set_header apikey "";' in rest
    # the checks come before the rewrite (its `break` ends the rewrite directives of the location)
    assert rest.index("$kong_acl_") < rest.index("rewrite ")
    # the functions route stays open
    assert "$kong_key" not in location(text, "/functions/v1/")
    # the consumer of each key, and which of them the acl lets through
    assert "'anon-secret-key' 'anon';" in text and "'service-secret-key' 'service_role';" in text
    acl_map = text[text.index("map $kong_consumer $kong_acl_"):]
    acl_map = acl_map[:acl_map.index("}")]
    assert "'anon' 1;" in acl_map and "'service_role' 1;" in acl_map and "outsider" not in acl_map
    err = capsys.readouterr().err
    assert "plugin 'cors' on service 'rest-v1' is not supported: ignored" in err
    assert "secret-key" not in err, "keys must never be printed"


def test_the_route_plugin_wins_over_the_service_and_global_ones():
    text = render_mod.render(config(
        global_plugins=[{"name": "key-auth", "config": {"key_names": ["global-key"]}}],
        service_plugins=[{"name": "key-auth", "config": {"key_names": ["service-key"]}}],
        route_plugins=[{"name": "key-auth", "config": {"key_names": ["X-Route-Key"], "key_in_query": False}}],
    ), "0.0.0.0:8000")
    rest = location(text, "/rest/v1/")
    assert "set $kong_key $http_x_route_key;" in rest
    assert "$arg_" not in rest and "service_key" not in rest and "global_key" not in rest
    # the global plugin applies where nothing closer is configured
    assert "set $kong_key $http_global_key;" in location(text, "/functions/v1/")


def test_acl_deny_and_a_disabled_plugin():
    text = render_mod.render(config(service_plugins=[
        {"name": "key-auth"}, {"name": "acl", "config": {"deny": ["admin"]}},
    ], route_plugins=[{"name": "key-auth", "enabled": False}]), "0.0.0.0:8000")
    acl_map = text[text.index("map $kong_consumer $kong_acl_"):]
    acl_map = acl_map[:acl_map.index("}")]
    assert "'anon' 1;" in acl_map and "'outsider' 1;" in acl_map and "service_role" not in acl_map
    # the route's disabled key-auth does not switch off the service's
    assert "$kong_key" in location(text, "/rest/v1/")


def test_consumers_without_a_key_check_add_no_maps():
    text = render_mod.render(config(), "0.0.0.0:8000")
    assert "$kong_key" not in text, "nginx refuses a map on a variable no location sets"


@pytest.mark.parametrize("plugins, consumers, message", [
    ([{"name": "key-auth"}, {"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}}], CONSUMERS,
     "acl has both allow and deny"),
    ([{"name": "key-auth"}, {"name": "acl", "config": {}}], CONSUMERS, "acl needs allow or deny"),
    ([{"name": "key-auth"}], [*CONSUMERS, {"username": "copy", "keyauth_credentials": [{"key": "anon-secret-key"}]}],
     "a key is already another consumer's"),
    ([{"name": "key-auth", "config": {"key_names": ["bad name"]}}], CONSUMERS, "key name 'bad name'"),
])
def test_refusals(capsys, plugins, consumers, message):
    with pytest.raises(SystemExit):
        render_mod.render(config(service_plugins=plugins, consumers=consumers), "0.0.0.0:8000")
    err = capsys.readouterr().err
    assert message in err
    assert "secret-key" not in err


def test_acl_without_key_auth_refuses_every_request():
    text = render_mod.render(config(service_plugins=[{"name": "acl", "config": {"allow": ["anon"]}}]), "0.0.0.0:8000")
    assert "return 401 '{\"message\":\"Unauthorized\"}';" in location(text, "/rest/v1/")


def test_the_map_bucket_fits_jwt_keys_and_comes_before_the_first_map():
    """Supabase's keys are JWTs of 150-200 characters: nginx's default map bucket (64 on x86) refuses
    them at start ("could not build map_hash"), and refuses the setting after a map ("is duplicate")."""
    jwt_like = "eyJ" + "x" * 180
    consumers = [{"username": "anon", "keyauth_credentials": [{"key": jwt_like}], "acls": [{"group": "anon"}]}]
    text = render_mod.render(config(service_plugins=[{"name": "key-auth"}], consumers=consumers), "0.0.0.0:8000")
    lines = text.splitlines()
    bucket = [line for line in lines if "map_hash_bucket_size" in line]
    assert bucket == ["    map_hash_bucket_size 256;"]
    first_map = next(i for i, line in enumerate(lines) if line.startswith("    map "))
    assert lines.index(bucket[0]) < first_map


def test_no_bucket_setting_without_a_key_check():
    text = render_mod.render(config(), "0.0.0.0:8000")
    assert "map_hash_bucket_size" not in text


def hold_plugin(pass_token="p" * 24, reads=("get_suite_config",), retry=30):
    spec = json.dumps({"pass": pass_token, "read_functions": list(reads), "retry_after": retry})
    return {"name": "pre-function", "tags": ["paycraft-write-hold"],
            "config": {"access": [f"-- paycraft-write-hold {spec}\nreturn"]}}


def test_the_write_hold_refuses_writes_before_any_location(capsys):
    text = render_mod.render(config(global_plugins=[hold_plugin(retry=45)]), "0.0.0.0:8000")
    assert "map $request_method $kong_hold_write { default 1; GET 0; HEAD 0; OPTIONS 0; }" in text
    assert "map $http_x_paycraft_hold_pass $kong_hold_pass { default 0; 'pppppppppppppppppppppppp' 1; }" in text
    assert "~^POST/rest/v1/rpc/(get_suite_config)/?$ 1;" in text
    server = text[text.index("    server {"):]
    assert server.index('if ($kong_hold = "100")') < server.index("location ^~")
    hold = server[server.index("location = /.paycraft-write-hold {"):]
    assert "add_header Retry-After 45 always;" in hold and "return 503 " in hold
    assert "is not supported" not in capsys.readouterr().err


def test_a_pre_function_that_is_not_the_hold_is_ignored(capsys):
    text = render_mod.render(config(global_plugins=[{"name": "pre-function", "config": {"access": ["return"]}}]),
                             "0.0.0.0:8000")
    assert "$kong_hold" not in text
    assert "plugin 'pre-function' on every route (global) is not supported" in capsys.readouterr().err


def test_the_collection_hold_renders_as_the_gateway_reads_it():
    import sys

    sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
    try:
        import gateway  # the collection's, as the reference reads it
    finally:
        sys.path.pop(0)
    spec = gateway.hold_spec("q" * 24, ["get_suite_config"], 30)
    text = gateway.text_with_hold(gateway.render(config()), spec)
    assert render_mod.write_hold(yaml.safe_load(text)) == spec
