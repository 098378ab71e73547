#!/usr/bin/env python
"""Write larvseg_hf/vocabularies/*.json from a snapshot of the authors' repository (provenance).

    git clone https://github.com/HaojunYu1998/LarvSeg /tmp/LarvSeg
    .venv/bin/python scripts/extract_reference_vocabularies.py /tmp/LarvSeg

Only facts travel: class-name tuples and wnid tuples of the reference's dataset classes, read as
literals (`ast.literal_eval`, nothing of theirs is executed), and the ImageNet-11K wnid -> name table.
A bare git directory works too (files are read with `git show`). The files are committed; this script
is how they were made and how to check them against another reference commit.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

REPO = "HaojunYu1998/LarvSeg"
OUT = Path(__file__).resolve().parents[1] / "larvseg_hf" / "vocabularies"


def read(ref: Path, path: str) -> str:
    """One file of the reference: from its work tree when there is one, else from its git objects."""
    if (ref / path).is_file():
        return (ref / path).read_text(encoding="utf-8")
    return subprocess.run(
        ["git", "--git-dir", str(ref), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def commit(ref: Path) -> str:
    git_dir = ref / ".git" if (ref / ".git").exists() else ref
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip()[:7] or "unknown"


def literals(source: str) -> dict[tuple[str, str], object]:
    """(class name, attribute) -> value of every literal class attribute of a Python file."""
    found: dict[tuple[str, str], object] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
                    try:
                        found[(node.name, statement.targets[0].id)] = ast.literal_eval(statement.value)
                    except ValueError:
                        pass
    return found


def write(name: str, data: dict) -> None:
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"name": name, **data}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{path}: {len(data.get('class_names') or data['synsets'])} entries")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("reference", type=Path, help="checkout or bare git directory of " + REPO)
    ref = parser.parse_args(argv).reference
    at = f"{REPO} (GitHub, commit {commit(ref)})"
    ade = literals(read(ref, "mmseg/datasets/ade.py"))
    coco = literals(read(ref, "mmseg/datasets/coco_stuff.py"))
    imagenet = literals(read(ref, "mmseg/datasets/imagenet.py"))

    def source(path: str, symbol: str) -> str:
        return f"{at}: {path}, {symbol}"

    write(
        "ade20k-150",
        {
            "description": "ADE20K SceneParsing, 150 classes (mmsegmentation's names).",
            "source": source("mmseg/datasets/ade.py", "ADE20KDataset.CLASSES"),
            "class_names": list(ade[("ADE20KDataset", "CLASSES")]),
        },
    )
    write(
        "ade20k-847",
        {
            "description": "ADE20K-Full, 847 classes.",
            "source": source("mmseg/datasets/ade.py", "ADE20KFULLDataset.CLASSES"),
            "class_names": list(ade[("ADE20KFULLDataset", "CLASSES")]),
        },
    )
    raw = list(coco[("COCOStuffDataset", "CLASSES")])
    merged = [name.split("-")[0] for name in coco[("ProcessedC171Dataset", "CLASSES")]]
    write(
        "coco-stuff-171",
        {
            "description": "COCO-Stuff, 171 classes. union_synonyms: the names these take in a union with "
            "other datasets (ADE20K's), as the reference's head renames them (ProcessedC171Dataset.CLASSES "
            "cut at the first '-').",
            "source": source(
                "mmseg/datasets/coco_stuff.py", "COCOStuffDataset.CLASSES, ProcessedC171Dataset.CLASSES"
            ),
            "class_names": raw,
            "union_synonyms": {a: b for a, b in zip(raw, merged, strict=True) if a != b},
        },
    )
    for size in (124, 585):
        cls = f"ImageNet{size}"
        write(
            f"imagenet-{size}",
            {
                "description": f"The ImageNet-21K subset of {size} synsets named as ADE20K classes (the paper's IN-{size}).",
                "source": source("mmseg/datasets/imagenet.py", f"{cls}.IMAGE_IDS, {cls}.CLASSES"),
                "synsets": dict(zip(imagenet[(cls, "IMAGE_IDS")], imagenet[(cls, "CLASSES")], strict=True)),
            },
        )
    table = json.loads(read(ref, "notebook/IN11K_IMAGE_IDS_to_CLASSES_dict.json"))
    write(
        "imagenet-11k",
        {
            "description": "The paper's IN-11K: 11,276 ImageNet-21K synsets; the reference names several synsets "
            "alike and trains them as one class.",
            "source": f"{at}: notebook/IN11K_IMAGE_IDS_to_CLASSES_dict.json",
            "synsets": table,
        },
    )


if __name__ == "__main__":
    main()
