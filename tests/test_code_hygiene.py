"""Package-wide bans from the issue and SEED_LESSONS items 2 and 8: no TorchScript, no global JIT
flags, no bare or swallowing except, no print() outside the command-line modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "protlig_dd"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Command-line front ends talk to the terminal; everything else logs.
CLI_MODULES = {"sample.py", "score.py", "evaluate.py", "prepare.py", "export.py", "cli.py"}


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_torchscript_or_jit_flags(path: Path) -> None:
    """No torch.jit use and no private JIT fuser switches (the 'Unknown device for graph fuser' trap)."""
    source = path.read_text()
    assert "torch.jit" not in source
    assert "_jit_override" not in source and "_jit_set" not in source


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_bare_or_swallowing_except(path: Path) -> None:
    """Every except names its exceptions, and none catches Exception just to pass."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ExceptHandler):
            assert node.type is not None, f"{path}:{node.lineno}: bare except"
            names = {getattr(n, "id", None) for n in ast.walk(node.type)}
            swallowed = len(node.body) == 1 and isinstance(node.body[0], ast.Pass)
            assert not ({"Exception", "BaseException"} & names and swallowed), f"{path}:{node.lineno}: swallowed"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_print_outside_clis(path: Path) -> None:
    """Library code logs; only the CLI front ends print."""
    if path.name in CLI_MODULES:
        return
    calls = [
        node.lineno
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not calls, f"{path}: print() at lines {calls}"
