#!/usr/bin/env python3
"""Render nginx.conf from a Kong 3 declarative configuration (DB-less mode).

Reads KONG_DECLARATIVE_CONFIG (services[] with url or protocol/host/port/path
and routes[] with paths[], strip_path, preserve_host; top-level routes[] with
`service` also work) and KONG_PROXY_LISTEN, writes an nginx configuration
that proxies each route path prefix (longest prefix wins, as in Kong) to its
service, resolving service hosts at request time through the container's DNS
(so a service that does not resolve gives 502, as Kong does).

Two plugins are honoured, with consumers[] (username, keyauth_credentials[].key,
acls[].group), on a route, on a service or globally (the route's wins, then the
service's, as in Kong):
- key-auth (key_names, default [apikey]; key_in_header, key_in_query; hide_credentials
  for headers): no key gives 401 {"message":"No API key found in request"} with
  WWW-Authenticate, a key no consumer holds gives 401 {"message":"Unauthorized"};
  the upstream gets X-Consumer-Username.
- acl (allow or deny groups): a consumer outside them gives 403
  {"message":"You cannot consume this service"}; the upstream gets X-Consumer-Groups.
- pre-function, only the collection's write hold (global, tagged paycraft-write-hold; the first
  line of its Lua holds its settings as JSON): every request but GET, HEAD, OPTIONS, a POST to
  /rest/v1/rpc/<one of its read functions> and a request carrying its pass header gets 503 with
  Retry-After, as the Lua does on a real Kong.
Everything else in the file (other plugins, hosts/methods matchers, regex paths)
is reported and ignored. Keys are never printed.

Usage: render.py OUTPUT_FILE
"""
import json
import os
import re
import sys
from urllib.parse import urlsplit

import yaml

KONG_VERSION = "3.7.1"
NOT_FOUND = '{"message":"no Route matched with those values"}'
BAD_GATEWAY = '{"message":"An invalid response was received from the upstream server"}'
TIMEOUT = '{"message":"The upstream server is timing out"}'
NO_KEY = '{"message":"No API key found in request"}'
BAD_KEY = '{"message":"Unauthorized"}'
FORBIDDEN = '{"message":"You cannot consume this service"}'
HONOURED = ("key-auth", "acl")
HOLD_TAG = "paycraft-write-hold"
HOLD_PASS_HEADER = "x-paycraft-hold-pass"  # noqa: S105 - a header name
HOLD_MESSAGE = ('{"message":"PayCraft is being upgraded or restored: writes are held back for a moment. '
                'Nothing was written; retry after the number of seconds in Retry-After."}')
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PASS_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def fail(msg):
    print(f"kong: {msg}", file=sys.stderr)
    sys.exit(1)


def note(msg):
    print(f"kong: {msg}", file=sys.stderr)


def nginx_string(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def service_target(svc):
    name = svc.get("name") or "<unnamed>"
    if svc.get("url"):
        parts = urlsplit(svc["url"])
        protocol, host, port, path = parts.scheme, parts.hostname, parts.port, parts.path
    else:
        protocol, host, port, path = svc.get("protocol"), svc.get("host"), svc.get("port"), svc.get("path")
    protocol = protocol or "http"
    if protocol not in ("http", "https"):
        fail(f"service '{name}': protocol '{protocol}' is not supported (http and https are)")
    if not host:
        fail(f"service '{name}': no host (give `url` or `host`)")
    port = int(port or (443 if protocol == "https" else 80))
    path = path or ""
    if path and not SAFE_PATH.match(path):
        fail(f"service '{name}': invalid path '{path}'")
    return {"name": name, "protocol": protocol, "host": host, "port": port, "path": path.rstrip("/"),
            "connect_timeout": int(svc.get("connect_timeout") or 60000),
            "read_timeout": int(svc.get("read_timeout") or 60000),
            "write_timeout": int(svc.get("write_timeout") or 60000)}


def honoured(plugins, where):
    """The enabled key-auth and acl plugins of a list, by name; the others are noted and ignored."""
    found = {}
    for plugin in plugins or []:
        name = plugin.get("name")
        if name == "pre-function" and HOLD_TAG in (plugin.get("tags") or []) and where.endswith("(global)"):
            continue  # the write hold: read by write_hold()
        if name not in HONOURED:
            note(f"plugin '{name}' on {where} is not supported: ignored")
        elif plugin.get("enabled", True):
            found[name] = plugin.get("config") or {}
    return found


def write_hold(config):
    """The settings of the collection's write hold (a global pre-function tagged HOLD_TAG), else None."""
    for plugin in config.get("plugins") or []:
        if not isinstance(plugin, dict) or HOLD_TAG not in (plugin.get("tags") or []):
            continue
        if plugin.get("name") != "pre-function" or not plugin.get("enabled", True):
            continue
        for code in (plugin.get("config") or {}).get("access") or []:
            first = str(code).split("\n", 1)[0]
            if not first.startswith(f"-- {HOLD_TAG} "):
                continue
            try:
                spec = json.loads(first[len(HOLD_TAG) + 4:])
            except ValueError:
                fail("the write hold's settings line is not JSON")
            names = [str(n) for n in spec.get("read_functions") or []]
            if not PASS_TOKEN.match(str(spec.get("pass", ""))) or not all(FUNCTION_NAME.match(n) for n in names):
                fail("the write hold's settings are not valid")
            return {"pass": str(spec["pass"]), "read_functions": names,
                    "retry_after": int(spec.get("retry_after") or 30)}
    return None


def hold_lines(spec):
    """(http-block maps, server lines) refusing writes with 503 + Retry-After (the module docstring)."""
    maps = [
        "map $request_method $kong_hold_write { default 1; GET 0; HEAD 0; OPTIONS 0; }",
        f"map $http_{HOLD_PASS_HEADER.replace('-', '_')} $kong_hold_pass "
        f"{{ default 0; {nginx_string(spec['pass'])} 1; }}",
    ]
    if spec["read_functions"]:
        names = "|".join(spec["read_functions"])
        maps.append(f"map $request_method$uri $kong_hold_read {{ default 0; ~^POST/rest/v1/rpc/({names})/?$ 1; }}")
    else:
        maps.append("map $uri $kong_hold_read { default 0; }")
    server = [
        'set $kong_hold "$kong_hold_write$kong_hold_pass$kong_hold_read";',
        'if ($kong_hold = "100") { rewrite ^ /.paycraft-write-hold last; }',
        "location = /.paycraft-write-hold {",
        "    internal;",
        f"    add_header Retry-After {spec['retry_after']} always;",
        f"    add_header Via 'kong/{KONG_VERSION}' always;",
        f"    return 503 {nginx_string(HOLD_MESSAGE)};",
        "}",
    ]
    return maps, server


def collect_routes(config):
    services = {}
    routes = []
    for svc in config.get("services") or []:
        target = service_target(svc)
        target["plugins"] = honoured(svc.get("plugins"), f"service '{target['name']}'")
        services[target["name"]] = target
        for route in svc.get("routes") or []:
            routes.append((route, target))
    for route in config.get("routes") or []:
        ref = route.get("service")
        ref = ref.get("name") if isinstance(ref, dict) else ref
        if ref not in services:
            fail(f"route '{route.get('name')}': unknown service '{ref}'")
        routes.append((route, services[ref]))
    for key in ("upstreams", "certificates"):
        if config.get(key):
            note(f"'{key}' are not supported: ignored")
    return routes


def collect_consumers(config):
    """{key: username} and {username: [groups]} of consumers[] (keys are never printed)."""
    keys, groups = {}, {}
    for consumer in config.get("consumers") or []:
        name = consumer.get("username") or consumer.get("custom_id")
        if not name:
            fail("a consumer has neither username nor custom_id")
        if name in groups:
            fail(f"consumer '{name}' is declared twice")
        groups[name] = [str(acl.get("group")) for acl in consumer.get("acls") or [] if acl.get("group")]
        for cred in consumer.get("keyauth_credentials") or []:
            key = cred.get("key")
            if not key:
                fail(f"consumer '{name}': a keyauth_credentials entry has no key")
            if key in keys:
                fail(f"consumer '{name}': a key is already another consumer's (Kong refuses duplicate keys)")
            keys[str(key)] = name
    return keys, groups


def dns_valid_ttl():
    """Seconds a resolved service address is cached (Kong's dns_valid_ttl; Kong itself keeps
    Docker's record TTL, 600 s, when it is unset: this stand-in keeps 10 s)."""
    value = os.environ.get("KONG_DNS_VALID_TTL", "").strip()
    return value if value.isdigit() and int(value) > 0 else "10"


def resolvers():
    found = []
    try:
        with open("/etc/resolv.conf") as fh:
            for line in fh:
                bits = line.split()
                if len(bits) >= 2 and bits[0] == "nameserver":
                    found.append(f"[{bits[1]}]" if ":" in bits[1] else bits[1])
    except OSError:
        pass
    return found or ["127.0.0.11"]


def listen_directives(spec):
    out = []
    for item in (spec or "0.0.0.0:8000").split(","):
        words = item.split()
        if not words or words[0] == "off":
            continue
        if "ssl" in words[1:]:
            note(f"proxy listener '{item.strip()}': TLS is not supported, ignored")
            continue
        out.append(f"listen {words[0]};")
    if not out:
        fail("KONG_PROXY_LISTEN has no usable plain-HTTP listener")
    return out


def key_auth_lines(conf, name):
    """The checks of key-auth in a location: the key from the headers, then the query."""
    key_names = conf.get("key_names") or ["apikey"]
    for key_name in key_names:
        if not HEADER_NAME.match(str(key_name)):
            fail(f"route '{name}': key-auth key name '{key_name}' is not supported")
    sources = []
    if conf.get("key_in_header", True):
        sources += ["$http_" + k.lower().replace("-", "_") for k in key_names]
    if conf.get("key_in_query", True):
        sources += ["$arg_" + k for k in key_names]
    if conf.get("key_in_body"):
        note(f"route '{name}': key-auth key_in_body is not supported: ignored")
    if conf.get("anonymous"):
        note(f"route '{name}': key-auth anonymous is not supported: ignored")
    lines = ['    set $kong_key "";']
    for source in sources:
        lines.append(f'    if ($kong_key = "") {{ set $kong_key {source}; }}')
    for variable, body in (("$kong_key", NO_KEY), ("$kong_consumer", BAD_KEY)):
        # add_header in the if block replaces the http block's, so Via is repeated here
        lines += [
            f'    if ({variable} = "") {{',
            "        add_header WWW-Authenticate 'Key realm=\"kong\"' always;",
            f"        add_header Via 'kong/{KONG_VERSION}' always;",
            f"        return 401 {nginx_string(body)};",
            "    }",
        ]
    lines.append("    proxy_set_header X-Consumer-Username $kong_consumer;")
    if conf.get("hide_credentials"):
        lines += [f"    proxy_set_header {k} \"\";" for k in key_names if conf.get("key_in_header", True)]
        if conf.get("key_in_query", True):
            note(f"route '{name}': key-auth hide_credentials keeps a key given in the query string")
    return lines


def acl_lines(conf, name, index, groups):
    """The check of acl in a location, through a map of the consumers it lets through."""
    allow, deny = conf.get("allow") or [], conf.get("deny") or []
    if allow and deny:
        fail(f"route '{name}': acl has both allow and deny (Kong accepts one of them)")
    if not allow and not deny:
        fail(f"route '{name}': acl needs allow or deny")
    admitted = sorted(user for user, its in groups.items()
                      if (set(its) & set(allow) if allow else not set(its) & set(deny)))
    lines = [f"    if ($kong_acl_{index} = 0) {{ return 403 {nginx_string(FORBIDDEN)}; }}",
             "    proxy_set_header X-Consumer-Groups $kong_groups;"]
    acl_map = [f"map $kong_consumer $kong_acl_{index} {{", "    default 0;"]
    acl_map += [f"    {nginx_string(user)} 1;" for user in admitted]
    acl_map.append("}")
    return lines, acl_map


def location_block(route, target, prefix, index, name, plugins, groups):
    strip = route.get("strip_path", True)
    preserve_host = route.get("preserve_host", False)
    var = f"$kong_upstream_{index}"
    lines = [f"location ^~ {prefix} {{", f"    set {var} {target['host']};"]
    maps = []
    if "key-auth" in plugins:
        lines += key_auth_lines(plugins["key-auth"], name)
    if "acl" in plugins:
        if "key-auth" not in plugins:
            # no consumer can be known: Kong answers 401 to every request
            lines.append(f"    return 401 {nginx_string(BAD_KEY)};")
        else:
            acl, maps = acl_lines(plugins["acl"], name, index, groups)
            lines += acl
    rest = re.escape(prefix).replace("/", "\\/")
    base = target["path"]
    if strip:
        # Kong: upstream path = service path + what follows the matched prefix.
        lines.append(f"    rewrite ^{rest}/?(.*)$ {base}/$1 break;")
    elif base:
        lines.append(f"    rewrite ^(.*)$ {base}$1 break;")
    forwarded_prefix = prefix.rstrip("/") if strip else '""'
    lines += [
        f"    proxy_set_header Host {'$http_host' if preserve_host else var};",
        f"    proxy_set_header X-Forwarded-Prefix {forwarded_prefix};",
        f"    proxy_connect_timeout {target['connect_timeout']}ms;",
        f"    proxy_read_timeout {target['read_timeout']}ms;",
        f"    proxy_send_timeout {target['write_timeout']}ms;",
        f"    proxy_pass {target['protocol']}://{var}:{target['port']};",
        "}",
    ]
    return lines, maps


def render(config, listen_spec):
    if not isinstance(config, dict):
        fail("declarative config is not a YAML mapping")
    if not str(config.get("_format_version", "")).startswith(("1", "2", "3")):
        fail("declarative config has no valid _format_version (expected '3.0')")
    locations = {}
    maps = []
    keys_checked = False  # a location sets $kong_key: the consumer maps below are needed (and valid)
    keys, groups = collect_consumers(config)
    global_plugins = honoured(config.get("plugins"), "every route (global)")
    for index, (route, target) in enumerate(collect_routes(config)):
        name = route.get("name") or f"route-{index}"
        for key in ("hosts", "methods", "headers", "snis"):
            if route.get(key):
                note(f"route '{name}': '{key}' matching is not supported: ignored")
        # Kong's precedence for one plugin name: the route's, then the service's, then the global one
        plugins = {**global_plugins, **target["plugins"], **honoured(route.get("plugins"), f"route '{name}'")}
        if plugins:
            note(f"route '{name}': " + ", ".join(sorted(plugins)))
        for path in route.get("paths") or []:
            if path.startswith("~"):
                note(f"route '{name}': regex path '{path}' is not supported: ignored")
                continue
            if not SAFE_PATH.match(path):
                fail(f"route '{name}': invalid path '{path}'")
            if path in locations:
                note(f"route '{name}': path '{path}' already routed: ignored")
                continue
            locations[path], path_maps = location_block(route, target, path, len(locations), name, plugins, groups)
            maps += path_maps
            keys_checked = keys_checked or "key-auth" in plugins
            note(f"route '{name}': {path} -> {target['protocol']}://{target['host']}:{target['port']}"
                 f"{target['path']} (strip_path={route.get('strip_path', True)})")
    hold = write_hold(config)
    hold_maps, hold_server = hold_lines(hold) if hold else ([], [])
    if hold:
        note(f"write hold: writes refused with 503, read functions open: {', '.join(hold['read_functions']) or 'none'}")
    server = [
        *listen_directives(listen_spec),
        *hold_server,
        "location @kong_502 { default_type application/json; return 502 " + nginx_string(BAD_GATEWAY) + "; }",
        "location @kong_504 { default_type application/json; return 504 " + nginx_string(TIMEOUT) + "; }",
        "error_page 502 503 = @kong_502;",
        "error_page 504 = @kong_504;",
    ]
    for path in sorted(locations):
        server += locations[path]
        # Kong matches plain prefixes: "/auth/v1" is not under "/auth/v1/" (and
        # nginx would otherwise answer it with a 301 redirect).
        if path.endswith("/") and len(path) > 1 and path.rstrip("/") not in locations:
            server.append(f"location = {path.rstrip('/')} {{ return 404 {nginx_string(NOT_FOUND)}; }}")
    if "/" not in locations:
        server.append(f"location / {{ return 404 {nginx_string(NOT_FOUND)}; }}")
    lines = [
        "# Generated at container start from the Kong declarative configuration.",
        "include /etc/nginx/modules-enabled/*.conf;",
        "worker_processes 1;",
        "pid /tmp/kong/nginx.pid;",
        "error_log stderr notice;",
        "events { worker_connections 1024; }",
        "http {",
        "    access_log /dev/stdout;",
        "    default_type application/json;",
        "    server_tokens off;",
        f"    more_set_headers 'Server: kong/{KONG_VERSION}';",
        f"    resolver {' '.join(resolvers())} valid={dns_valid_ttl()}s ipv6=off;",
        "    resolver_timeout 5s;",
        "    client_max_body_size 0;",
        "    client_body_temp_path /tmp/kong/client_body;",
        "    proxy_temp_path /tmp/kong/proxy;",
        "    fastcgi_temp_path /tmp/kong/fastcgi;",
        "    uwsgi_temp_path /tmp/kong/uwsgi;",
        "    scgi_temp_path /tmp/kong/scgi;",
        "    proxy_http_version 1.1;",
        "    proxy_buffering off;",
        "    proxy_request_buffering off;",
        "    map $http_upgrade $kong_connection { default upgrade; '' keep-alive; }",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $kong_connection;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Forwarded-Host $host;",
        "    proxy_set_header X-Forwarded-Port $server_port;",
        f"    add_header Via 'kong/{KONG_VERSION}' always;",
    ]
    lines += ["    " + line for line in hold_maps]
    if keys_checked:
        # the consumer of the request's key, and its groups (consumers[]); nginx refuses a map
        # on $kong_key when no location sets it
        # a map's keys must fit its hash bucket: API keys are JWTs of 150-200 characters, longer than
        # the default bucket (one CPU cache line, 64 bytes): "could not build map_hash" at start
        bucket = 64
        while bucket < max([len(k) for k in keys] + [len(u) for u in groups] + [0]) + 32:
            bucket *= 2
        # before the first map of the http block (nginx refuses it after one: "directive is duplicate")
        first_map = next(i for i, line in enumerate(lines) if line.startswith("    map "))
        lines.insert(first_map, f"    map_hash_bucket_size {bucket};")
        lines += ["    map $kong_key $kong_consumer {", '        default "";']
        lines += [f"        {nginx_string(key)} {nginx_string(user)};" for key, user in sorted(keys.items())]
        lines += ["    }", "    map $kong_consumer $kong_groups {", '        default "";']
        lines += [f"        {nginx_string(user)} {nginx_string(', '.join(its))};"
                  for user, its in sorted(groups.items()) if its]
        lines += ["    }"]
        lines += ["    " + line for line in maps]
    lines += ["    server {"]
    lines += ["        " + line for line in server]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2:
        fail("usage: render.py OUTPUT_FILE")
    if (os.environ.get("KONG_DATABASE") or "off") != "off":
        note(f"KONG_DATABASE={os.environ['KONG_DATABASE']} is not supported: running DB-less")
    source = os.environ.get("KONG_DECLARATIVE_CONFIG")
    if not source:
        fail("KONG_DECLARATIVE_CONFIG is not set (DB-less mode needs a declarative config file)")
    try:
        with open(source) as fh:
            config = yaml.safe_load(fh)
    except OSError as exc:
        fail(f"error parsing declarative config file {source}: {exc.strerror}")
    except yaml.YAMLError as exc:
        fail(f"error parsing declarative config file {source}: {exc}")
    text = render(config, os.environ.get("KONG_PROXY_LISTEN"))
    with open(argv[1], "w") as fh:
        fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
