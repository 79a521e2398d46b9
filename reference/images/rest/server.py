#!/usr/bin/env python3
"""A PostgREST-compatible API: the subset that supabase-js speaks for PayCraft.

Configured like postgrest/postgrest by PGRST_DB_URI, PGRST_DB_SCHEMAS (the
first schema is exposed), PGRST_DB_ANON_ROLE, PGRST_JWT_SECRET and
PGRST_SERVER_PORT (default 3000).

Implemented: POST/GET /rpc/<fn> with named arguments; GET /<table> with
select=, <col>=<op>.<value> filters (eq neq gt gte lt lte like ilike is in,
with not.), order=, limit=, offset=; POST (insert), PATCH and DELETE on
tables with the same filters and `Prefer: return=representation`;
`Accept: application/vnd.pgrst.object+json` (one object, 406 otherwise).
Each request runs in one transaction with SET LOCAL ROLE <JWT role claim>
and request.jwt.claims set, as PostgREST does, so RLS and auth.uid() work.
Not implemented: resource embedding, the OpenAPI document, counts, upserts,
aggregates, range headers.
"""
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

SERVER_HEADER = "postgrest/12.2.3"
OBJECT_MEDIA = "application/vnd.pgrst.object+json"
RESERVED = {"select", "order", "limit", "offset", "columns", "on_conflict"}
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE", "ilike": "ILIKE"}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

DB_URI = os.environ.get("PGRST_DB_URI", "")
SCHEMA = (os.environ.get("PGRST_DB_SCHEMAS") or os.environ.get("PGRST_DB_SCHEMA") or "public").split(",")[0].strip()
ANON_ROLE = os.environ.get("PGRST_DB_ANON_ROLE", "")
JWT_SECRET = os.environ.get("PGRST_JWT_SECRET", "")
PORT = int(os.environ.get("PGRST_SERVER_PORT", "3000"))


class ApiError(Exception):
    def __init__(self, status, code, message, details=None, hint=None, headers=None):
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "details": details, "hint": hint, "message": message}
        self.headers = headers or {}


def log(msg):
    print(f"{time.strftime('%d/%b/%Y:%H:%M:%S %z')}: {msg}", file=sys.stderr, flush=True)


# --- connections -------------------------------------------------------------
_pool = []
_pool_lock = threading.Lock()


def get_conn():
    with _pool_lock:
        if _pool:
            return _pool.pop()
    try:
        conn = psycopg2.connect(DB_URI, application_name="postgrest")
    except psycopg2.OperationalError as exc:
        log(f"Connection to the database failed: {exc}".strip())
        raise ApiError(503, "PGRST000", "Database connection error. Retrying the connection.",
                       str(exc).strip()) from exc
    return conn


def put_conn(conn):
    if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        with contextlib.suppress(psycopg2.Error):
            conn.close()
        return
    with _pool_lock:
        if len(_pool) < 10:
            _pool.append(conn)
            return
    conn.close()


# --- errors --------------------------------------------------------------------
def status_for(sqlstate, anonymous):
    if sqlstate == "42501":
        return 401 if anonymous else 403
    exact = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404, "40001": 409}
    if sqlstate in exact:
        return exact[sqlstate]
    prefix = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
              "3B": 500, "40": 500, "53": 503, "54": 413, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
              "P0": 500, "XX": 500}
    return prefix.get((sqlstate or "XX")[:2], 400)


def db_error(exc, anonymous):
    diag = exc.diag
    return ApiError(status_for(exc.pgcode, anonymous), exc.pgcode,
                    diag.message_primary or str(exc).strip(), diag.message_detail, diag.message_hint)


# --- JWT -----------------------------------------------------------------------
def claims_for(authorization):
    """Return the JWT claims of the request ({} when anonymous)."""
    if not authorization:
        return {}
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return {}
    if not JWT_SECRET:
        raise ApiError(500, "PGRST300", "Server lacks JWT secret")
    invalid = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    try:
        return jwt.decode(token.strip(), JWT_SECRET, algorithms=["HS256", "HS384", "HS512"],
                          options={"verify_aud": False, "verify_iat": False})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "PGRST303", "JWT expired", headers=invalid) from None
    except jwt.InvalidSignatureError:
        raise ApiError(401, "PGRST301", "JWSError JWSInvalidSignature", headers=invalid) from None
    except jwt.PyJWTError as exc:
        raise ApiError(401, "PGRST301", f"JWSError {exc}", headers=invalid) from None


# --- query building ------------------------------------------------------------
def ident(name):
    if not IDENT.match(name):
        raise ApiError(400, "PGRST100", f'"failed to parse" "{name}"', "unexpected identifier")
    return sql.Identifier(name)


def select_list(spec):
    if not spec or spec == "*":
        return sql.SQL("*")
    items = []
    for part in spec.split(","):
        part = part.strip()
        if "(" in part:
            raise ApiError(400, "PGRST100", "resource embedding is not supported by the reference rest image")
        alias, _, col = part.rpartition(":")
        col = col.split("::")[0]
        items.append(sql.SQL("{} AS {}").format(ident(col), ident(alias)) if alias else ident(col))
    return sql.SQL(", ").join(items)


def filter_clause(col, expr):
    negate = expr.startswith("not.")
    if negate:
        expr = expr[4:]
    op, dot, value = expr.partition(".")
    if not dot:
        raise ApiError(400, "PGRST100", f'"failed to parse filter ({expr})"')
    column = ident(col)
    if op in OPERATORS:
        if op in ("like", "ilike"):
            value = value.replace("*", "%")
        clause, params = sql.SQL("{} " + OPERATORS[op] + " %s").format(column), [value]
    elif op == "is":
        keyword = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}.get(value.lower())
        if keyword is None:
            raise ApiError(400, "PGRST100", f'"failed to parse filter (is.{value})"')
        clause, params = sql.SQL("{} IS " + keyword).format(column), []
    elif op == "in":
        values = [v.strip().strip('"') for v in value.strip("()").split(",") if v.strip()]
        if not values:
            clause, params = sql.SQL("FALSE"), []
        else:
            clause = sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(sql.Placeholder() * len(values)))
            params = values
    else:
        raise ApiError(400, "PGRST100", f'"failed to parse filter ({op}.{value})"', f"unknown operator {op}")
    if negate:
        clause = sql.SQL("NOT ({})").format(clause)
    return clause, params


def where_and_tail(query):
    clauses, params, order, limit, offset = [], [], [], None, None
    for key, value in query:
        if key == "order":
            for item in value.split(","):
                bits = item.strip().split(".")
                term = [ident(bits[0])]
                for mod in bits[1:]:
                    words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
                    if mod not in words:
                        raise ApiError(400, "PGRST100", f'"failed to parse order ({item})"')
                    term.append(sql.SQL(words[mod]))
                order.append(sql.SQL(" ").join(term))
        elif key in ("limit", "offset"):
            if not value.isdigit():
                raise ApiError(400, "PGRST100", f'"failed to parse {key} ({value})"')
            limit, offset = (int(value), offset) if key == "limit" else (limit, int(value))
        elif key not in RESERVED:
            clause, p = filter_clause(key, value)
            clauses.append(clause)
            params.extend(p)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("")
    tail = sql.SQL("")
    if order:
        tail += sql.SQL(" ORDER BY ") + sql.SQL(", ").join(order)
    if limit is not None:
        tail += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
    if offset is not None:
        tail += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
    return where, tail, params


FUNCTION_LOOKUP = """
SELECT p.proretset, rt.typtype, rt.typname, p.pronargdefaults,
       coalesce(array_agg(a.name ORDER BY a.ord) FILTER (WHERE a.ord IS NOT NULL), '{}'),
       coalesce(array_agg(format_type(a.typ, NULL) ORDER BY a.ord) FILTER (WHERE a.ord IS NOT NULL), '{}')
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_type rt ON rt.oid = p.prorettype
  LEFT JOIN LATERAL unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                           p.proargnames,
                           coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs])))
            WITH ORDINALITY AS a(typ, name, mode, ord) ON a.mode IN ('i', 'b', 'v')
 WHERE n.nspname = %s AND p.proname = %s
 GROUP BY p.oid, p.proretset, rt.typtype, rt.typname, p.pronargdefaults
"""


def as_text(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


# --- the handler ---------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_HEADER
    sys_version = ""

    def version_string(self):
        return SERVER_HEADER

    def log_message(self, fmt, *args):
        log(f"{self.address_string()} - \"{self.requestline}\" {args[1] if len(args) > 1 else ''}")

    def send_json(self, status, payload, headers=None, content_type="application/json; charset=utf-8"):
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "PGRST102", "Empty or invalid json", str(exc)) from None

    def do_OPTIONS(self):
        self.send_response(200)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, POST, PATCH, PUT, DELETE, OPTIONS, HEAD")
        self.send_header("Access-Control-Allow-Headers",
                         self.headers.get("Access-Control-Request-Headers") or "Authorization, Content-Type")
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PATCH = do_DELETE = do_GET

    def dispatch(self):
        try:
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            query = parse_qsl(url.query, keep_blank_values=True)
            claims = claims_for(self.headers.get("Authorization"))
            if not parts:
                self.send_json(200, {"swagger": "2.0", "info": {"title": "PostgREST API (reference)",
                                                                 "version": "12.2.3"}, "paths": {}})
                return
            if parts[0] == "rpc" and len(parts) == 2 and self.command in ("GET", "HEAD", "POST"):
                args = dict(query) if self.command != "POST" else (self.read_body() or {})
                self.run(claims, lambda cur: self.rpc(cur, parts[1], args))
            elif len(parts) == 1:
                self.run(claims, lambda cur: self.table(cur, parts[0], query))
            else:
                raise ApiError(404, "PGRST125", f"Invalid path specified in request URL: {url.path}")
        except ApiError as err:
            self.send_json(err.status, err.body, err.headers)
        except Exception as exc:  # a bug here must still answer as PostgREST would
            log(f"internal error: {exc!r}")
            self.send_json(500, {"code": "PGRST000", "details": None, "hint": None, "message": str(exc)})

    def run(self, claims, work):
        role = claims.get("role") or ANON_ROLE
        if not role:
            raise ApiError(401, "PGRST302", "Anonymous access is disabled")
        conn = get_conn()
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                    cur.execute(
                        "SELECT set_config('request.jwt.claims', %s, true),"
                        " set_config('request.jwt.claim.sub', %s, true),"
                        " set_config('request.jwt.claim.role', %s, true),"
                        " set_config('request.method', %s, true),"
                        " set_config('request.path', %s, true),"
                        " set_config('request.headers', %s, true)",
                        (json.dumps(claims) if claims else "", str(claims.get("sub") or ""), role,
                         self.command, urlsplit(self.path).path,
                         json.dumps({k.lower(): v for k, v in self.headers.items()})))
                    status, payload, headers, ctype = work(cur)
                    conn.commit()
                except psycopg2.Error as exc:
                    conn.rollback()
                    if exc.pgcode is None:
                        raise ApiError(503, "PGRST000", "Database connection error", str(exc).strip()) from exc
                    raise db_error(exc, anonymous=not claims) from exc
                except BaseException:
                    conn.rollback()
                    raise
        finally:
            put_conn(conn)
        self.send_json(status, payload, headers, ctype)

    def wants_object(self):
        return OBJECT_MEDIA in (self.headers.get("Accept") or "")

    def shape(self, rows, status=200, headers=None):
        headers = dict(headers or {})
        if self.wants_object():
            if len(rows) != 1:
                raise ApiError(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
                               f"The result contains {len(rows)} rows")
            return status, rows[0], headers, OBJECT_MEDIA + "; charset=utf-8"
        return status, rows, headers, "application/json; charset=utf-8"

    def rpc(self, cur, name, args):
        if not isinstance(args, dict):
            raise ApiError(400, "PGRST102", "Only a JSON object of named arguments is supported")
        cur.execute(FUNCTION_LOOKUP, (SCHEMA, name))
        wanted = set(args)
        chosen = None
        for retset, typtype, typname, ndefaults, names, types in cur.fetchall():
            required = set(names[:len(names) - ndefaults])
            if wanted <= set(names) and required <= wanted:
                chosen = (retset, typtype, typname, dict(zip(names, types, strict=True)))
                break
        if chosen is None:
            sig = ", ".join(sorted(wanted))
            raise ApiError(404, "PGRST202", f"Could not find the function {SCHEMA}.{name}({sig}) in the schema cache",
                           f"Searched for the function {SCHEMA}.{name} with parameters {sig} or with a single "
                           "unnamed json/jsonb parameter, but no matches were found in the schema cache.")
        retset, typtype, typname, argtypes = chosen
        call_args = sql.SQL(", ").join(
            sql.SQL("{} := %s::{}").format(sql.Identifier(k), sql.SQL(argtypes[k])) for k in args)
        fn = sql.SQL("{}.{}({})").format(sql.Identifier(SCHEMA), sql.Identifier(name), call_args)
        params = [as_text(v) for v in args.values()]
        if retset:
            cur.execute(sql.SQL("SELECT coalesce(json_agg(_r), '[]') FROM {} _r").format(fn), params)
            return self.shape(cur.fetchone()[0])
        if typname == "void":
            cur.execute(sql.SQL("SELECT {}").format(fn), params)
            return 204, None, {}, "application/json; charset=utf-8"
        if typtype == "c":
            cur.execute(sql.SQL("SELECT to_json(_r) FROM {} _r").format(fn), params)
        else:
            cur.execute(sql.SQL("SELECT to_json({})").format(fn), params)
        return 200, cur.fetchone()[0], {}, "application/json; charset=utf-8"

    def table(self, cur, name, query):
        target = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), ident(name))
        cols = select_list(dict(query).get("select"))
        where, tail, params = where_and_tail(query)
        returning = "return=representation" in (self.headers.get("Prefer") or "")
        if self.command in ("GET", "HEAD"):
            cur.execute(sql.SQL("SELECT coalesce(json_agg(_r), '[]') FROM (SELECT {} FROM {}{}{}) _r")
                        .format(cols, target, where, tail), params)
            rows = cur.fetchone()[0]
            end = f"0-{len(rows) - 1}/*" if rows else "*/*"
            return self.shape(rows, headers={"Content-Range": end})
        if self.command == "POST":
            body = self.read_body()
            records = body if isinstance(body, list) else [body]
            if not records or not all(isinstance(r, dict) for r in records):
                raise ApiError(400, "PGRST102", "Expected a JSON object or an array of objects")
            columns = sorted({k for r in records for k in r})
            col_list = sql.SQL(", ").join(ident(c) for c in columns)
            stmt = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM json_populate_recordset(NULL::{}, %s)").format(
                target, col_list, col_list, target)
            params = [json.dumps(records)]
            status = 201
        elif self.command == "PATCH":
            body = self.read_body()
            if not isinstance(body, dict) or not body:
                raise ApiError(400, "PGRST102", "Expected a JSON object")
            sets = sql.SQL(", ").join(
                sql.SQL("{} = (SELECT {} FROM json_populate_record(NULL::{}, %s))").format(ident(c), ident(c), target)
                for c in body)
            stmt = sql.SQL("UPDATE {} SET {}{}").format(target, sets, where)
            params = [json.dumps(body)] * len(body) + params
            status = 200
        else:  # DELETE
            stmt = sql.SQL("DELETE FROM {}{}").format(target, where)
            status = 200
        if returning:
            stmt = sql.SQL("WITH _w AS ({} RETURNING {}.*) SELECT coalesce(json_agg(_r), '[]') FROM "
                           "(SELECT {} FROM _w) _r").format(stmt, target, cols)
            cur.execute(stmt, params)
            return self.shape(cur.fetchone()[0], status)
        cur.execute(stmt, params)
        return (201 if status == 201 else 204), None, {}, "application/json; charset=utf-8"


def main():
    if not DB_URI:
        print("rest: PGRST_DB_URI is not set", file=sys.stderr)
        return 1
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)  # noqa: S104 - a container service
    server.daemon_threads = True
    # PID 1 in a container: without a handler SIGTERM is ignored and `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"Listening on port {PORT} (schema {SCHEMA}, anonymous role {ANON_ROLE or '-'})")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
