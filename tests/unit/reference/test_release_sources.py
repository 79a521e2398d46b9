"""The reference release's sources, read without a database or Docker: every tag as make-release.sh builds it.

* The functions import what PayCraft's import (std's ``serve`` and ``esm.sh`` modules by URL, helpers from
  ``../_shared/``), and every URL they import is covered by the edge-runtime stand-in's import map, whose
  packages the image caches at build time (``prefetch.ts``): otherwise a worker fails to boot offline.
* The schema of every tag names PayCraft's contracts, not the invented ones the reference had before
  (``api_keys``, ``create_api_key``, the ``handle_new_user_tenancy`` trigger).

What the migrations and functions do is tested on PostgreSQL and on a stack in
tests/integration/reference/test_release_stack.py.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EDGE = REPO / "reference" / "images" / "edge-runtime"
IMPORT_RE = re.compile(r'^\s*(?:import|export)\s[^;]*?\bfrom\s+"([^"]+)"|^\s*import\s+"([^"]+)"', re.M)


def imports(text: str) -> list[str]:
    return [a or b for a, b in IMPORT_RE.findall(text)]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    dest = tmp_path_factory.mktemp("release") / "paycraft.git"
    subprocess.run(["bash", str(REPO / "reference" / "make-release.sh"), str(dest)], check=True,
                   capture_output=True, text=True, timeout=300)
    return dest


def tags(repo: Path) -> list[str]:
    return subprocess.run(["git", "-C", str(repo), "tag", "--list"], check=True, capture_output=True,
                          text=True).stdout.split()


def tree(repo: Path, tag: str) -> dict[str, str]:
    """{path: text} of the tag's .ts and .sql files."""
    names = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", tag], check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "-C", str(repo), "show", f"{tag}:{n}"], check=True, capture_output=True,
                              text=True).stdout
            for n in names if n.endswith((".ts", ".sql"))}


def import_map() -> dict[str, str]:
    return json.loads((EDGE / "import_map.json").read_text())["imports"]


def test_every_tag_is_there(release):
    assert set(tags(release)) == {"v1.0.0", "v1.1.0", "v1.1.1-broken-migration", "v1.1.2-broken-function",
                                  "v1.1.3-auth-image", "v1.1.4-webhooks", "v1.2.0-upstream-shape"}


def test_functions_import_like_paycraft_and_resolve_offline(release):
    mapped = import_map()
    seen_remote, seen_shared = set(), set()
    for tag in tags(release):
        files = tree(release, tag)
        for path, text in files.items():
            if not (path.startswith("supabase/functions/") and path.endswith(".ts")):
                continue
            for spec in imports(text):
                if spec.startswith("https://"):
                    assert spec in mapped, f"{tag}:{path} imports {spec}, which the edge runtime's import map lacks"
                    seen_remote.add(spec)
                elif spec.startswith("."):
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
                    assert target in files, f"{tag}:{path} imports {spec}, not in the tag ({target})"
                    if "/_shared/" in target:
                        seen_shared.add(tag)
                else:
                    pytest.fail(f"{tag}:{path} imports {spec!r}: PayCraft's functions import URLs or relative paths")
    # the shapes PayCraft's functions use
    assert {"https://deno.land/std@0.208.0/http/server.ts", "https://esm.sh/@supabase/supabase-js@2",
            "https://deno.land/std@0.177.0/http/server.ts", "https://esm.sh/stripe@14.0.0?target=deno"} <= seen_remote
    assert seen_shared >= {"v1.0.0", "v1.1.0", "v1.1.4-webhooks", "v1.2.0-upstream-shape"}


def test_the_image_caches_every_package_the_map_names():
    mapped = import_map()
    prefetched = set(imports((EDGE / "prefetch.ts").read_text()))
    assert prefetched <= set(mapped)
    # every npm package the map points at is cached by the build (several URLs may share one package)
    targets = {mapped[url] for url in prefetched if mapped[url].startswith("npm:")}
    assert targets == {t for t in mapped.values() if t.startswith("npm:")}
    for url, target in mapped.items():
        if not target.startswith("npm:"):
            assert target.startswith("/opt/edge-runtime/shims/"), url
            assert (EDGE / "shims" / Path(target).name).is_file(), target
    assert "--import-map" in (EDGE / "edge-runtime").read_text()
    assert '"--import-map", importMapPath' in (EDGE / "main.ts").read_text()


def test_the_schema_names_paycrafts_contracts(release):
    for tag in tags(release):
        sql = "\n".join(t for p, t in tree(release, tag).items() if p.endswith(".sql"))
        for gone in ("api_keys", "create_api_key", "handle_new_user_tenancy", "tenant_members",
                     "get_suite_config", "is_tenant_member"):
            assert gone not in sql, f"{tag}: {gone} is not PayCraft's"
        if tag == "v1.2.0-upstream-shape":
            assert sql == "", "the head release ships no migrations (its server/migrations dangles)"
            continue
        for contract in ("CREATE TABLE IF NOT EXISTS public.tenants", "api_key_test", "api_key_live",
                         "CREATE TABLE IF NOT EXISTS public.tenant_admins",
                         "public.resolve_tenant(p_api_key text)\nRETURNS uuid",
                         "public.provision_tenant(p_user_id uuid, p_app_name text, p_email text)\nRETURNS jsonb",
                         "public.provision_app(p_app_name text)\nRETURNS jsonb",
                         "public.rotate_api_key(p_user_id uuid, p_mode text)\nRETURNS jsonb",
                         "'/functions/v1/stripe-webhook/' || v_tenant.id",
                         'CREATE POLICY "tenants_admin_select"', 'CREATE POLICY "tenant_admins_own"'):
            assert contract in sql, f"{tag}: {contract!r} missing"
        # the ledger behaviour: some files carry their own transaction, as PayCraft's do
        assert re.search(r"^BEGIN;$", sql, re.M) and re.search(r"^COMMIT;$", sql, re.M)
