"""The package's shape: imports run downwards through the declared layers, never in a cycle, and
no private attribute of another library is used."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ragft_helpers"

# Bottom to top: a module may import only modules listed before it. The README draws the same.
LAYERS = [
    ["config", "hub", "machine"],  # settings and the machine; no ragft_helpers imports
    # where things come from; this CPU's speed against the machine the benchmarks ran on
    ["server", "assets", "wikitext", "speed"],
    # folders keyed by settings; finished work (scores, examples, tables) saved under a key of
    # what it depends on
    ["checkpoints", "score_cache"],
    ["corpus", "qa", "lm"],  # documents and chunks, the question set, language-model basics
    ["lexical", "fusion"],  # the BM25 index beside Chroma; fusing dense and BM25 scores
    ["scoring", "store"],  # the scoring rules; the Chroma index
    ["retrieval", "retrieval_metrics"],
    ["rag", "chat"],
    ["training"],
    ["finetune_wikitext", "pitfalls", "injection"],
    # retrieval-augmented fine-tuning: readers trained on retrieved contexts; the knowledge
    # fine-tune trained long, watched on held-out text
    ["raft", "forgetting"],
    ["harness", "results", "claims"],
    ["tasks"],  # task classification: zero-shot, few-shot, kNN and fine-tuned classifiers
    ["viz", "widgets"],
    ["doctor", "cli"],
]
ORDER = [name for layer in LAYERS for name in layer]

# Private attributes of other libraries that earlier versions of the package reached into.
PRIVATE_USES = re.compile(r"_identifier_to_system|\._client\b|_load_from_checkpoint|TRAINER_STATE_NAME"
                          r"|assets\._cached_snapshot")
OTHER_LIBRARIES = ("chromadb", "transformers", "datasets", "huggingface_hub", "peft", "accelerate")


def package_imports(path: Path) -> set[str]:
    """Modules of ragft_helpers that ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ragft_helpers":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("ragft_helpers."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ragft_helpers."))
    return found


def modules() -> dict[str, set[str]]:
    return {p.stem: package_imports(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def layer_violations(graph: dict[str, set[str]], order: list[str]) -> list[str]:
    rank = {name: n for n, name in enumerate(order)}
    problems = [f"{name} is not in the declared layers" for name in graph if name not in rank]
    for name, imported in graph.items():
        for target in imported:
            if name in rank and target in rank and rank[target] >= rank[name]:
                problems.append(f"{name} imports {target}, which is not below it")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_has_a_layer_and_imports_only_below_it():
    graph = modules()
    assert layer_violations(graph, ORDER) == []
    assert set(ORDER) == set(graph), "the declared layers list every module, and only those"


def test_no_import_cycles():
    assert cycles(modules()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {"config": {"cli"}, "cli": {"config"}}
    assert layer_violations(graph, ["config", "cli"]) == ["config imports cli, which is not below it"]
    assert cycles(graph) == [["cli", "config", "cli"]]


def test_no_private_attribute_of_another_library_is_used():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {m.group(0)}" for m in PRIVATE_USES.finditer(text)]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(OTHER_LIBRARIES):
                offenders += [f"{path.name}: from {node.module} import {a.name}"
                              for a in node.names if a.name.startswith("_")]
                if any(part.startswith("_") for part in node.module.split(".")):
                    offenders.append(f"{path.name}: from {node.module}")
    assert offenders == []
    assert PRIVATE_USES.search("collection._client.get_max_batch_size()")


def test_notebook_01_imports_no_training_code():
    source = (PACKAGE.parent / "notebooks" / "src" / "01_language_models_101.py").read_text()
    imported = package_imports_from_text(source)
    assert imported and not imported & {"training", "finetune_wikitext", "injection", "checkpoints"}


def package_imports_from_text(text: str) -> set[str]:
    found = set()
    for line in text.splitlines():
        match = re.match(r"from ragft_helpers(?:\.(\w+))? import (.+)", line)
        if match:
            found |= {match.group(1)} if match.group(1) else {n.strip() for n in match.group(2).split(",")}
    return found
