"""Import layering, read from the source (ast): the core knows no channel or agent, channels know only the contract.

The core loads channels and agents by name at start-up (gateway.registry's plugin paths), so
nothing in gateway/ needs to import them; a channel reaches the core through the modules below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The gateway modules a channel may import today. The contract work narrows this set;
# a module added here is a new promise the core makes to every channel.
CHANNEL_MAY_IMPORT = {
    "gateway.egress",  # the one check and client for URLs a caller supplied (SSRF), shared with the core
    "gateway.errors",
    # One Markdown parser for every channel (the model's text is parsed once, the same safe way);
    # each channel renders the tree in its own format.
    "gateway.markdown",
    "gateway.messages",
    "gateway.metrics",
    "gateway.protocols",
    "gateway.retry",
    "gateway.settings",
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, skip_type_checking: bool) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import; `from a import b` yields a.b as well as a (b may be a module)."""
    for node in ast.iter_child_nodes(tree):
        if skip_type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from (item for child in node.orelse for item in _imports(child, skip_type_checking=True))
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        yield from _imports(node, skip_type_checking=skip_type_checking)


def _found(package: str, *, skip_type_checking: bool = False) -> dict[str, set[str]]:
    """Module imported -> the places (file:line) that import it, for every .py under `package`."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in _imports(tree, skip_type_checking=skip_type_checking):
            found.setdefault(module, set()).add(f"{path.relative_to(ROOT)}:{line}")
    return found


def _top(module: str) -> str:
    return module.partition(".")[0]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("outer", ["channels", "agents"])
def test_the_core_imports_no_channel_and_no_agent(outer):
    wrong = {m: places for m, places in _found("gateway", skip_type_checking=True).items() if _top(m) == outer}
    assert wrong == {}


def test_channels_import_only_the_contract_modules_of_the_core():
    imported = _found("channels")
    gateway_modules = {m for m in imported if _under(m, "gateway")}
    # `from gateway.errors import Malformed` also yields gateway.errors.Malformed: judge by the module.
    modules = {m for m in gateway_modules if not any(m.startswith(a + ".") for a in CHANNEL_MAY_IMPORT)}
    # `from gateway import metrics` yields "gateway" too: the package itself is only a namespace.
    wrong = {m: sorted(imported[m]) for m in modules - CHANNEL_MAY_IMPORT - {"gateway"}}
    assert wrong == {}


def test_channels_import_no_agent():
    assert {m: places for m, places in _found("channels").items() if _top(m) == "agents"} == {}


def test_the_allowed_set_is_not_stale():
    """Each module allowed to channels is imported by one; a module no channel needs comes off the list."""
    imported = _found("channels")
    assert {m for m in CHANNEL_MAY_IMPORT if m not in imported} == set()


# What the Redis layer may build on: the domain's types and errors, settings, and the process's
# instruments. Not the web layer, not the worker or the outbox that use it.
STORE_MAY_IMPORT = {"gateway.errors", "gateway.events", "gateway.loops", "gateway.messages", "gateway.metrics"}
STORE_MAY_IMPORT |= {"gateway.settings", "gateway.tracing"}


def test_the_store_builds_only_on_the_domain_types():
    imported = _found("gateway/store", skip_type_checking=True)
    outside = {m for m in imported if _under(m, "gateway") and not _under(m, "gateway.store") and m != "gateway"}
    modules = {m for m in outside if not any(m.startswith(a + ".") for a in STORE_MAY_IMPORT)}
    assert {m: sorted(imported[m]) for m in modules - STORE_MAY_IMPORT} == {}


def test_only_the_entry_points_import_the_web_layer():
    """The domain (worker, outbox, router, store, launch, ...) never imports gateway.web; the process entry
    points that serve HTTP (serve, cli) and the HumanLayer API's routes do."""
    entry_points = {"gateway/serve.py", "gateway/cli.py", "gateway/humanlayer/routes.py"}
    found = _found("gateway", skip_type_checking=True)
    wrong = {
        m: sorted(p for p in places if not p.startswith("gateway/web/") and p.split(":")[0] not in entry_points)
        for m, places in found.items()
        if _under(m, "gateway.web")
    }
    assert {m: places for m, places in wrong.items() if places} == {}
