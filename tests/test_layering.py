"""The dependency direction of CONVENTIONS.md, checked by walking the imports: the core (rtoolkit/) never imports the
export layer or the demo, except lazily inside a CLI command; the export layer reads the export-folder format
through the runtime instead of defining it again."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

OUTER = ("rtoolkit.export", "rtoolkit.demos")


def _imports(path: Path) -> list[tuple[str, ast.AST, list[ast.AST]]]:
    """(module imported, node, enclosing function/class nodes) for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, ast.AST, list[ast.AST]]] = []

    def visit(node: ast.AST, scopes: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = [*scopes, child] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else scopes
            if isinstance(child, ast.Import):
                found.extend((alias.name, child, scopes) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, child, scopes))
            visit(child, inner)

    visit(tree, [])
    return found


def test_the_core_never_imports_export_or_demos_at_module_level():
    offenders = []
    for path in sorted((REPO / "rtoolkit").rglob("*.py")):
        for module, node, scopes in _imports(path):
            if not module.startswith(OUTER):
                continue
            lazy_in_cli = path.name == "cli.py" and scopes  # inside a command function
            if not lazy_in_cli:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {module}")
    assert offenders == []


def test_the_export_folder_format_has_one_owner():
    """MANIFEST_NAME, the file names and the manifest classes are defined in rtoolkit/runtime/artifacts.py only."""
    definitions = []
    for path in sorted([*(REPO / "rtoolkit").rglob("*.py"), *(REPO / "export").rglob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = []
            if isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.ClassDef):
                names = [node.name]
            for name in names:
                if name in ("MANIFEST_NAME", "ONNX_FP32", "ENGINES_DIR", "TASKS", "Manifest", "Artifact"):
                    definitions.append(f"{path.relative_to(REPO)}:{name}")
    assert sorted(definitions) == sorted(
        f"rtoolkit/runtime/artifacts.py:{n}"
        for n in ("MANIFEST_NAME", "ONNX_FP32", "ENGINES_DIR", "TASKS", "Manifest", "Artifact")
    )


def _string_sequences(path):
    """(line, frozenset of strings) for every list/tuple literal made of two or more string constants."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        strings = isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 2
        if strings and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, frozenset(e.value for e in node.elts)


def test_choice_lists_and_the_mask_probability_have_one_owner():
    """Backends, precisions, tasks, export choices, validation keys and data formats are spelled out once; the
    CLI and the other modules import them. The 0.15 mask probability is written only in MaskingConfig."""
    owners = {
        frozenset({"auto", "torch", "onnx", "tensorrt"}): "rtoolkit/runtime/backends.py",
        frozenset(
            {
                "fill-mask",
                "classification",
                "embedding",
                "question-answering",
                "multiple-choice",
                "token-classification",
            }
        ): "rtoolkit/runtime/artifacts.py",
        frozenset({"embeddings", "head"}): "rtoolkit/runtime/artifacts.py",
        frozenset(
            {"max_abs_diff", "top1_agreement", "top5_agreement", "pearson", "cosine_min", "accuracy_drop"}
        ): ("rtoolkit/runtime/artifacts.py"),
        frozenset({"fp32", "bf16", "fp16"}): "rtoolkit/train/loop.py",
        frozenset({"csv", "tsv", "jsonl"}): "rtoolkit/data/glue.py",
        frozenset({"mean", "cls"}): "rtoolkit/predictor.py",
    }
    found, owned = [], set()
    for path in sorted([*(REPO / "rtoolkit").rglob("*.py"), *(REPO / "export").rglob("*.py")]):
        rel = str(path.relative_to(REPO))
        for line, values in _string_sequences(path):
            if values in owners and owners[values] != rel:
                found.append(f"{rel}:{line} {sorted(values)}")
            elif values in owners:
                owned.add(values)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        probabilities = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == 0.15]
        if probabilities and rel != "rtoolkit/data/masking.py":
            found.append(f"{rel}:{probabilities} writes 0.15")
    assert found == []
    assert owned == set(owners)  # each list is where the test says
