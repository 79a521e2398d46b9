# -*- coding: utf-8 -*-
# Copyright: paycraft.selfhost maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's own Kong declarative file: the release's routes plus Supabase's API-key check.

Pure Python (no Ansible import, no PyYAML on the managed host): used by the paycraft_gateway_config
module and unit tested directly.

PayCraft's ``kong.yml`` routes ``/rest/v1/`` and ``/auth/v1/`` with no key check, so a request with no
``apikey`` at all reaches PostgREST as ``anon``. Supabase's own ``kong.yml`` puts ``key-auth`` and ``acl``
on these routes, with two consumers: ``anon`` (group ``anon``) holding the anon key and ``service_role``
(group ``admin``) holding the service role key. :func:`with_key_check` does the same to the release's
file:

* every service with a route on a checked prefix (``/rest/v1/``, ``/auth/v1/``) gets ``key-auth``
  (``key_names: [apikey]``; ``hide_credentials``: true for rest, false for auth, as Supabase) and ``acl``
  (``allow: [admin, anon]``, ``hide_groups_header: true``);
* ``/functions/v1/`` stays open: the SDK's config call carries its own PayCraft key;
* GoTrue's browser-facing links (``/auth/v1/verify``, ``/callback``, ``/authorize``: a confirmation mail's
  link carries no ``apikey``) get their own open routes, as Supabase's ``auth-v1-open`` services;
* the two consumers hold the host's keys literally (Kong has no environment substitution in a
  declarative file); consumers the release declares under other names stay;
* a file without ``_format_version`` gets ``"3.0"`` (Kong refuses a declarative file without one).

Field names and types follow Kong 3.x's schemas (key-auth and acl ``schema.lua``/``daos.lua``, the consumers
entity, the declarative format), checked in tests/unit/plugins/module_utils/test_gateway.py.

:func:`render` writes the result as block YAML with JSON-quoted scalars (valid YAML, readable, no PyYAML).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

CHECKED_PREFIXES = ("/rest/v1/", "/auth/v1/")
# Supabase's kong.yml: auth-v1-open, auth-v1-open-callback, auth-v1-open-authorize
OPEN_AUTH_PATHS = ("/auth/v1/verify", "/auth/v1/callback", "/auth/v1/authorize")
ANON, SERVICE_ROLE = "anon", "service_role"
KEY_NAMES = ("apikey",)
# Kong 3's declarative format; a file without _format_version is refused by Kong
FORMAT_VERSION = "3.0"
GROUPS = {ANON: "anon", SERVICE_ROLE: "admin"}
MASKED = "********"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class GatewayError(ValueError):
    """A Kong file the key check cannot be added to."""


def _route_paths(service: dict) -> list:
    return [p for r in service.get("routes") or [] if isinstance(r, dict) for p in r.get("paths") or []]


def _checked_prefix(service: dict):
    """The checked prefix (``/rest/v1/``, ``/auth/v1/``) one of the service's routes serves, else None."""
    for path in _route_paths(service):
        for prefix in CHECKED_PREFIXES:
            if path.rstrip("/") == prefix.rstrip("/"):
                return prefix
    return None


def _base_url(service: dict) -> str:
    if service.get("url"):
        return str(service["url"]).rstrip("/")
    host = service.get("host")
    if not host:
        raise GatewayError(f"service '{service.get('name')}' has neither url nor host")
    port = service.get("port")
    path = str(service.get("path") or "").rstrip("/")
    return f"{service.get('protocol', 'http')}://{host}{':' + str(port) if port else ''}{path}"


def with_key_check(kong: dict, anon_key: str, service_key: str, open_paths=OPEN_AUTH_PATHS) -> dict:
    """A copy of ``kong`` whose /rest/v1/ and /auth/v1/ services check ``apikey`` (module docstring)."""
    if not isinstance(kong, dict):
        raise GatewayError("the release's Kong file is not a mapping")
    if not anon_key or not service_key:
        raise GatewayError("the anon key and the service role key are both needed")
    if anon_key == service_key:
        raise GatewayError("the anon key and the service role key are the same value")
    out = copy.deepcopy(kong)
    out.setdefault("_format_version", FORMAT_VERSION)
    services = [s for s in out.get("services") or [] if isinstance(s, dict)]
    checked = [(s, _checked_prefix(s)) for s in services]
    checked = [(s, prefix) for s, prefix in checked if prefix]
    if not checked:
        raise GatewayError("no service routes /rest/v1/ or /auth/v1/: there is nothing to put the key check on")
    names = {s.get("name") for s in services}
    for service, prefix in checked:
        plugins = [p for p in service.get("plugins") or []
                   if not (isinstance(p, dict) and p.get("name") in ("key-auth", "acl"))]
        plugins += [
            # key_names given, not left to the gateway's default: the SDK's header is apikey
            {"name": "key-auth", "config": {"key_names": list(KEY_NAMES), "hide_credentials": prefix == "/rest/v1/"}},
            {"name": "acl", "config": {"hide_groups_header": True, "allow": [GROUPS[SERVICE_ROLE], GROUPS[ANON]]}},
        ]
        service["plugins"] = plugins
        if prefix != "/auth/v1/":
            continue
        base = _base_url(service)
        for path in open_paths:
            suffix = path[len("/auth/v1/"):] if path.startswith("/auth/v1/") else None
            if not suffix:
                raise GatewayError(f"open path {path!r} is not under /auth/v1/")
            name = f"auth-v1-open-{suffix.replace('/', '-')}"
            if name in names:
                continue
            names.add(name)
            out["services"].append({"name": name, "url": f"{base}/{suffix}",
                                    "routes": [{"name": name, "strip_path": True, "paths": [path]}]})
    consumers = [c for c in out.get("consumers") or []
                 if not (isinstance(c, dict) and (c.get("username") in GROUPS))]
    for username, key in ((ANON, anon_key), (SERVICE_ROLE, service_key)):
        consumers.append({"username": username, "keyauth_credentials": [{"key": key}],
                          "acls": [{"group": GROUPS[username]}]})
    out["consumers"] = consumers
    return out


FUNCTIONS_PREFIX = "/functions/v1/"
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<host>[^/:?#]+)(?P<rest>.*)$")


def functions_upstream(config: dict) -> list:
    """The base URLs of the services that route ``/functions/v1/`` (the edge runtime), in file order."""
    return [_base_url(s) for s in config.get("services") or []
            if isinstance(s, dict) and FUNCTIONS_PREFIX.rstrip("/") in {p.rstrip("/") for p in _route_paths(s)}]


def with_functions_upstream(config: dict, host: str) -> dict:
    """A copy of ``config`` whose ``/functions/v1/`` services proxy to ``host`` (same scheme, port and path).

    The upgrade starts the new release's edge runtime beside the running one, under another compose
    service name, and points the gateway at it until the main one is recreated and answers: the gateway
    never waits for a cold start. An empty ``host`` leaves the file as the release has it."""
    if not host:
        return config
    if not _HOST.match(host):
        raise GatewayError(f"not a host name for the /functions/v1/ upstream: {host!r}")
    out = copy.deepcopy(config)
    switched = 0
    for service in out.get("services") or []:
        if not isinstance(service, dict):
            continue
        if FUNCTIONS_PREFIX.rstrip("/") not in {p.rstrip("/") for p in _route_paths(service)}:
            continue
        if service.get("url"):
            match = _URL.match(str(service["url"]))
            if not match:
                raise GatewayError(f"service '{service.get('name')}' has a url without a host: {service['url']!r}")
            service["url"] = f"{match['scheme']}{host}{match['rest']}"
        elif service.get("host"):
            service["host"] = host
        else:
            raise GatewayError(f"service '{service.get('name')}' has neither url nor host")
        switched += 1
    if not switched:
        raise GatewayError("no service routes /functions/v1/: there is no edge runtime upstream to switch")
    return out


def describe(config: dict) -> dict:
    """What the file does, with no key: the routes that check a key, the open ones, the consumers."""
    checked, open_routes = [], []
    for service in config.get("services") or []:
        if not isinstance(service, dict):
            continue
        names = {p.get("name") for p in service.get("plugins") or [] if isinstance(p, dict)
                 and p.get("enabled", True)}
        (checked if "key-auth" in names else open_routes).extend(_route_paths(service))
    consumers = [c.get("username") for c in config.get("consumers") or [] if isinstance(c, dict)]
    return {"checked_routes": checked, "open_routes": open_routes, "consumers": consumers}


# a credential line of a rendered file: '      - key: "<value>"'
_KEY_LINE = re.compile(r'^(\s*(?:- )?key: ).*$', re.M)


def mask_text(text: str) -> str:
    """A rendered file (this one or an earlier one on disk) with every credential shown as ``********``."""
    return _KEY_LINE.sub(f'\\1"{MASKED}"', text)


def _scalar(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def _key(key) -> str:
    key = str(key)
    return key if _PLAIN_KEY.match(key) else json.dumps(key)


def _lines(value, indent: int) -> list:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:")
                out += _lines(item, indent + 2)
            else:
                out.append(f"{pad}{_key(key)}: {_inline(item)}")
        return out
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = _lines(item, indent + 2)
                out.append(f"{pad}- {nested[0].lstrip()}")
                out += nested[1:]
            else:
                out.append(f"{pad}- {_inline(item)}")
        return out
    return [pad + _inline(value)]


def _inline(value) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def render(config: dict, header: str = "") -> str:
    """Block YAML of ``config`` (JSON-quoted scalars), after ``header`` as comment lines."""
    comments = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    return "\n".join(comments + _lines(config, 0)) + "\n"


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- The write hold ------------------------------------------------------------------------------
# While an operation may still restore a snapshot (upgrade: from the snapshot until its smoke test
# passed or it rolled back; rollback.yml: its restore), the gateway refuses every write with 503 and
# Retry-After, and reads keep answering. A payment provider retries whatever did not get a 2xx, so a
# refused write is delivered again later; a write acknowledged and then restored away is lost.
# It is one global pre-function plugin (bundled with Kong, runs before the key check), tagged
# HOLD_TAG; its Lua starts with a comment line holding the spec as JSON, which the reference gateway
# (reference/images/kong/render.py, no Lua) reads to do the same in nginx.
HOLD_TAG = "paycraft-write-hold"
HOLD_PASS_HEADER = "X-PayCraft-Hold-Pass"  # noqa: S105 - a header name
HOLD_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
HOLD_MESSAGE = ("PayCraft is being upgraded or restored: writes are held back for a moment. "
                "Nothing was written; retry after the number of seconds in Retry-After.")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PASS = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def hold_spec(pass_token: str, read_functions=(), retry_after: int = 30) -> dict:
    """The hold's settings, checked: who may pass (the operation's own smoke test sends the token in
    HOLD_PASS_HEADER), which ``POST /rest/v1/rpc/<name>`` stay open (functions PostgREST runs read-only:
    STABLE or IMMUTABLE), and the Retry-After seconds."""
    if not _PASS.match(pass_token or ""):
        raise GatewayError("the hold's pass token must be 16-128 characters of [A-Za-z0-9_-]")
    names = sorted(set(read_functions or ()))
    bad = [n for n in names if not _FUNCTION_NAME.match(str(n))]
    if bad:
        raise GatewayError(f"not a plain function name: {bad[0]!r}")
    retry_after = int(retry_after)
    if not 1 <= retry_after <= 3600:
        raise GatewayError("Retry-After must be 1-3600 seconds")
    return {"pass": pass_token, "read_functions": names, "retry_after": retry_after}


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable ASCII is a valid Lua string literal


def hold_lua(spec: dict) -> str:
    """The pre-function's access code for Kong (first line: the spec, for the reference gateway)."""
    spec = hold_spec(spec["pass"], spec.get("read_functions"), spec.get("retry_after", 30))
    reads = ", ".join(f"[{_lua_string(n)}] = true" for n in spec["read_functions"])
    safe = " or ".join(f"method == {_lua_string(m)}" for m in HOLD_SAFE_METHODS)
    return "\n".join([
        f"-- {HOLD_TAG} {json.dumps(spec, sort_keys=True)}",
        "local method = kong.request.get_method()",
        f"if {safe} then return end",
        f"if kong.request.get_header({_lua_string(HOLD_PASS_HEADER.lower())}) == {_lua_string(spec['pass'])} "
        "then return end",
        'local fn = string.match(kong.request.get_path(), "^/rest/v1/rpc/([%w_]+)/?$")',
        f"local reads = {{{reads}}}",
        'if method == "POST" and fn and reads[fn] then return end',
        f"return kong.response.exit(503, {{message = {_lua_string(HOLD_MESSAGE)}}}, "
        f"{{[\"Retry-After\"] = {_lua_string(str(spec['retry_after']))}}})",
    ])


def spec_of_lua(code: str):
    """The spec on the first line of a hold's Lua, else None."""
    first = (code or "").split("\n", 1)[0]
    prefix = f"-- {HOLD_TAG} "
    if not first.startswith(prefix):
        return None
    try:
        spec = json.loads(first[len(prefix):])
    except ValueError:
        return None
    return spec if isinstance(spec, dict) else None


# The hold is put into (and taken out of) the rendered file as text, between two comment lines, so a
# host's file is held and released in place (the gateway's bind mount keeps seeing the same file)
# whatever wrote it.
HOLD_BEGIN = f"  # {HOLD_TAG}: begin (writes refused until the operation ends)"
HOLD_END = f"  # {HOLD_TAG}: end"
_HOLD_ADDED = f"plugins:  # {HOLD_TAG}: added"
_HOLD_WAS_EMPTY = f"plugins:  # {HOLD_TAG}: was []"


def text_without_hold(text: str) -> str:
    """A rendered file with the hold taken out (unchanged when it has none)."""
    out, inside = [], False
    for line in text.split("\n"):
        if line == HOLD_BEGIN:
            inside = True
        elif line == HOLD_END:
            inside = False
        elif inside or line == _HOLD_ADDED:
            continue
        elif line == _HOLD_WAS_EMPTY:
            out.append("plugins: []")
        else:
            out.append(line)
    return "\n".join(out)


def text_with_hold(text: str, spec: dict) -> str:
    """A rendered file (gateway.render) with the hold as its first global plugin."""
    lines = text_without_hold(text).rstrip("\n").split("\n")
    item = _lines([{"name": "pre-function", "tags": [HOLD_TAG], "config": {"access": [hold_lua(spec)]}}], 2)
    block = [HOLD_BEGIN, *item, HOLD_END]
    if "plugins:" in lines:
        at = lines.index("plugins:") + 1
        if any(re_line.strip() == '- name: "pre-function"' for re_line in lines[at:]
               if re_line.startswith("  - ")):
            raise GatewayError("the release's Kong file has a global pre-function plugin already: "
                               "the write hold cannot be added beside it")
        lines[at:at] = block
    elif "plugins: []" in lines:
        at = lines.index("plugins: []")
        lines[at:at + 1] = [_HOLD_WAS_EMPTY, *block]
    else:
        lines += [_HOLD_ADDED, *block]
    return "\n".join(lines) + "\n"


def text_hold(text: str):
    """The spec of the hold in a rendered file, else None."""
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith('- "-- ' + HOLD_TAG):
            try:
                return spec_of_lua(json.loads(stripped[2:]))
            except ValueError:
                return None
    return None


def write_hold_of(config: dict):
    """The spec of the hold in ``config``, else None."""
    for plugin in config.get("plugins") or []:
        if isinstance(plugin, dict) and HOLD_TAG in (plugin.get("tags") or []):
            for code in (plugin.get("config") or {}).get("access") or []:
                spec = spec_of_lua(code)
                if spec:
                    return spec
    return None
