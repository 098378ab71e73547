"""Known vocabularies: sizes, disambiguated ImageNet lemmas, unions against the reference's files.

ImageNet-1K / -21K need timm's data files: the `vocab` extra, or the data-only copy scripts/setup.sh installs
(known_vocabularies.TIMM_DATA_ONLY_DIR). Nothing here imports timm or reads the network.
"""

from __future__ import annotations

import json
import sys
import tomllib
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest

import larvseg_hf.vocabulary as vocabulary_module
from larvseg_hf import known_vocabularies as kv
from larvseg_hf.data.vocabulary_mapping import build_union_vocabulary
from larvseg_hf.known_vocabularies import known_vocabulary, list_known_vocabularies, name_synsets
from larvseg_hf.training.arguments import DataArguments, parse_train_args
from larvseg_hf.training.setup import known_target
from larvseg_hf.vocabulary import UNMAPPED, UnionVocabulary, normalize_name

REPO = Path(__file__).resolve().parents[1]
REFERENCE = json.loads((REPO / "tests" / "fixtures" / "larvseg_reference_unions.json").read_text())["unions"]
#: COCO names the reference's older union files keep although its head renames them (to glass,
#: television receiver, dirt track, windowpane / blind).
STALE_COCO = {"wine glass", "tv", "dirt", "window"}

SIZES = {
    "ade20k-150": 150,
    "ade20k-847": 847,
    "coco-stuff-171": 171,
    "imagenet-1k": 1000,
    "imagenet-21k": 21841,
    "imagenet-21k-goog": 21843,
    "imagenet-124": 124,
    "imagenet-585": 585,
    "imagenet-11k": 10472,  # the reference's names of 11,276 synsets
    "coco171+ade150": 247,  # the reference's file/ade150ucoco.json, name for name
    "coco171+ade150+in124": 247,
    "coco171+in124": 224,  # reference 228: its file keeps the 4 stale COCO names
    "coco171+ade847": 909,  # reference 913: 4 spelling twins ("parking-meter", "parking meter") merge here
    "coco171+ade847+in585": 909,
    "coco171+in585": 658,  # reference 663: 2 twins, 4 stale names, + "glass" (COCO's renamed wine glass)
    "coco171+in11k": 10513,  # reference 10524: 20 twins, 4 stale, + 13 IN-11K spellings kept apart
    "coco171+ade847+in11k": 10738,  # reference 10751: 22 twins, 4 stale, + the same 13
}


@pytest.fixture
def fresh_cache():
    """Loaders cache their results; a test that patches where files come from must not see or leave any."""
    kv._load.cache_clear()
    kv._union.cache_clear()
    yield
    kv._load.cache_clear()
    kv._union.cache_clear()


def test_every_known_vocabulary_has_its_size():
    assert set(SIZES) >= set(list_known_vocabularies())
    assert {name: len(known_vocabulary(name)) for name in SIZES} == SIZES
    assert len(known_vocabulary("imagenet-11k").wnids) == 11276
    for union, (path, reference_size) in kv.PAPER_UNIONS.items():
        assert known_vocabulary(union).name == union, "the paper's unions are listed under their own names"
        assert len(REFERENCE.get(path, [None] * reference_size)) == reference_size


@pytest.mark.parametrize("name", [*SIZES, "coco171+in21k"])
def test_names_are_unique_after_normalisation_and_no_alias_is_a_class(name):
    vocab = known_vocabulary(name)
    normal = [normalize_name(n) for n in vocab.class_names]
    assert len(set(normal)) == len(normal)
    assert not set(vocab.synonyms) & set(normal)
    assert set(vocab.synonyms.values()) <= set(vocab.class_names)
    assert set(vocab.wnids.values()) <= set(vocab.class_names)
    union = vocab.to_union_vocabulary()  # the training vocabulary: same classes, same ids
    assert union.names == normal
    ids = {n: i for i, n in enumerate(vocab.class_names)}
    assert all(union.index_of(alias) == ids[t] for alias, t in list(vocab.synonyms.items())[:500])


def test_names_are_accepted_in_any_spelling_and_cached():
    assert known_vocabulary("ADE20K_150") is known_vocabulary("ade150") is known_vocabulary("a150")
    assert known_vocabulary("ade20k-150").name == "ade20k-150"
    assert known_vocabulary(" COCO171 + ADE150 ") is known_vocabulary("coco-stuff-171+ade20k-150")
    assert vocabulary_module.known_vocabulary("in124") is known_vocabulary("imagenet-124")
    assert vocabulary_module.list_known_vocabularies() == list_known_vocabularies()


def test_unknown_names_raise_listing_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown vocabulary 'ade20k-15'.*Closest: \['ade20k-150'\].*Known: \["
    ):
        known_vocabulary("ade20k-15")
    with pytest.raises(
        ValueError, match=r"unknown vocabulary 'ade999' in 'coco171\+ade999'.*coco171\+ade150"
    ):
        known_vocabulary("coco171+ade999")
    with pytest.raises(ValueError, match="twice"):
        known_vocabulary("ade150+a150")
    with pytest.raises(TypeError):
        known_vocabulary(150)


# ---------------------------------------------------------------------------------------------- ImageNet


def test_repeated_lemmas_are_disambiguated_and_keep_their_wnids():
    in1k = known_vocabulary("imagenet-1k")
    assert in1k.wnids["n02012849"] == "crane (n02012849)"  # the bird: no other lemma
    assert in1k.wnids["n03126707"] == "crane (n03126707)"  # the machine
    assert in1k.wnids["n02113186"] == "Cardigan (Cardigan Welsh corgi)"  # collides with the sweater's
    assert in1k.wnids["n02963159"] == "cardigan (n02963159)"
    assert in1k.wnids["n03710721"] == "maillot (tank suit)"
    assert "crane" not in in1k and "crane" not in in1k.synonyms  # ambiguous: no class takes the bare name
    assert in1k.wnids_of("crane (n03126707)") == ["n03126707"]
    assert in1k.class_names[0] == "tench" and in1k.class_names[999] == "toilet tissue"  # timm's class order
    in21k = known_vocabulary("imagenet-21k")
    assert in21k.wnids["n03126707"] == "crane (n03126707)"
    assert in21k.wnids["n00017222"] == "plant (flora)"
    assert in21k.wnids["n03956922"] == "plant (industrial plant)"
    assert in21k.wnids["n02205219"] == "crane fly"
    assert len(in21k.wnids) == 21841 and list(in21k.wnids) == sorted(in21k.wnids)
    assert set(known_vocabulary("imagenet-124").wnids) <= set(in21k.wnids)
    assert set(known_vocabulary("imagenet-585").wnids) - set(in21k.wnids) == {"n09859684"}
    assert "n09859684" in known_vocabulary("imagenet-21k-goog").wnids
    assert set(in1k.wnids) - set(in21k.wnids) == {"n04399382"}  # teddy bear: not in fall11


def test_synonyms_resolve_lemmas_hub_label_strings_and_wnids():
    in21k = known_vocabulary("imagenet-21k")
    assert in21k.resolve("being") == "organism"
    assert in21k.resolve("n03126707") == "crane (n03126707)"
    in1k = known_vocabulary("imagenet-1k")
    assert in1k.resolve("tench, Tinca tinca") == "tench"  # the Hub imagenet-1k's ClassLabel name
    assert in1k.resolve("Cardigan Welsh corgi") == "Cardigan (Cardigan Welsh corgi)"
    assert in1k.resolve("TANK_SUIT") == "maillot (tank suit)"
    with pytest.raises(
        KeyError, match=r"'crane' is ambiguous .*'crane \(n02012849\)', 'crane \(n03126707\)'"
    ):
        in1k.resolve("crane")
    assert known_vocabulary("coco171+ade150+in124").resolve("n03636248") == "lamp"


def test_disambiguation_does_not_depend_on_the_synsets_order():
    lemmas = {
        "n1": ["crane"],
        "n2": ["crane"],
        "n3": ["plant", "flora", "plant life"],
        "n4": ["plant", "works", "industrial plant"],
        "n5": ["works", "deeds"],  # "works" is its first lemma: n4 cannot be called by it
        "n6": ["being", "organism"],
        "n7": ["organism", "being"],
    }
    names, synonyms = name_synsets(lemmas)
    assert names == {
        "n1": "crane (n1)",
        "n2": "crane (n2)",
        "n3": "plant (flora)",
        "n4": "plant (industrial plant)",
        "n5": "works",
        "n6": "being",
        "n7": "organism",
    }
    assert synonyms["plant life"] == "plant (flora)" and synonyms["n2"] == "crane (n2)"
    assert "crane" not in synonyms and "works" not in synonyms and "being" not in synonyms
    assert name_synsets(dict(reversed(lemmas.items()))) == (names, synonyms)
    with pytest.raises(ValueError, match="without lemmas"):
        name_synsets({"n1": []})


def test_in11k_keeps_the_reference_classes():
    in11k = known_vocabulary("imagenet-11k")
    assert in11k.wnids_of("crane") == ["n02012849", "n03126707"]  # one class, as the reference trains it
    assert in11k.resolve("n02113186") == "Cardigan"  # the corgi; the sweater keeps a class of its own
    assert in11k.resolve("n02963159") == "cardigan (n02963159)"


def _fake_timm(folder: Path, synsets: dict[str, str]) -> Path:
    """A timm package folder holding only ImageNetInfo's 1K synset and lemma files, for `synsets` (wnid: lemmas)."""
    info = folder / "timm" / "data" / "_info"
    info.mkdir(parents=True)
    (info / kv.TIMM_SYNSET_FILES["imagenet-1k"]).write_text("\n".join(synsets) + "\n")
    (info / kv.TIMM_LEMMA_FILE).write_text("".join(f"{w}\t{lemmas}\n" for w, lemmas in synsets.items()))
    return folder / "timm"


def _timm_at(monkeypatch, prefix: Path, importable: Path | None, torchvision: bool = True) -> None:
    """Python's view: `importable` as the importable timm (None: none), `prefix` as sys.prefix."""
    specs = {"timm": importable and SimpleNamespace(submodule_search_locations=[str(importable)])}
    specs["torchvision"] = SimpleNamespace() if torchvision else None
    monkeypatch.setattr(kv, "find_spec", specs.get)
    monkeypatch.setattr(kv.sys, "prefix", str(prefix))


def test_missing_timm_names_the_pip_command(monkeypatch, fresh_cache, tmp_path):
    _timm_at(monkeypatch, tmp_path, importable=None)
    with pytest.raises(
        ImportError, match=r"pip install \"larvseg-hf\[vocab\]\".*--no-deps --target"
    ) as error:
        known_vocabulary("imagenet-21k")
    assert str(tmp_path / kv.TIMM_DATA_ONLY_DIR) in str(error.value)  # the exact folder to install into
    with pytest.raises(ImportError, match="pip install"):
        known_vocabulary("coco171+in1k")
    assert len(known_vocabulary("coco171+ade150")) == 247  # the reference's files need no timm


def test_a_timm_without_the_files_is_reported(monkeypatch, fresh_cache, tmp_path):
    _timm_at(monkeypatch, tmp_path, importable=tmp_path / "site" / "timm")
    with pytest.raises(ImportError, match=r"need timm's imagenet_synsets.txt, imagenet_synset_to_lemma.txt"):
        known_vocabulary("imagenet-1k")


def test_timm_files_come_from_the_extra_or_the_data_only_copy(monkeypatch, fresh_cache, tmp_path, caplog):
    _fake_timm(tmp_path / kv.TIMM_DATA_ONLY_DIR, {"n1": "tench, Tinca tinca", "n2": "goldfish"})
    _timm_at(monkeypatch, tmp_path, importable=None)
    assert known_vocabulary("imagenet-1k").class_names == ("tench", "goldfish")
    kv._load.cache_clear()
    extra = _fake_timm(tmp_path / "site", {"n3": "crane", "n4": "crane"})
    _timm_at(monkeypatch, tmp_path, importable=extra)  # the importable timm (the extra) comes first
    assert known_vocabulary("imagenet-1k").class_names == ("crane (n3)", "crane (n4)")
    assert "without torchvision" not in caplog.text
    kv._load.cache_clear()
    _timm_at(monkeypatch, tmp_path, importable=extra, torchvision=False)
    assert len(known_vocabulary("imagenet-1k")) == 2
    assert "timm is installed without torchvision: accelerate's CLI imports timm" in caplog.text


def test_timm_is_read_never_imported():
    assert len(known_vocabulary("imagenet-1k")) == 1000
    assert "timm" not in sys.modules


def test_no_timm_without_torchvision_in_this_environment():
    """accelerate's CLI imports timm whenever it is importable, and timm imports torchvision: a timm installed
    --no-deps stops every `accelerate launch` (tests/test_training.py), with an error far from its cause."""
    assert find_spec("timm") is None or find_spec("torchvision") is not None, (
        "timm is importable without torchvision; uninstall it and use the data-only copy scripts/setup.sh "
        f"installs ({kv.TIMM_DATA_ONLY_DIR} under sys.prefix)"
    )


def test_setup_installs_the_data_only_copy_where_it_is_read():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f"--no-deps --upgrade --target .venv/{kv.TIMM_DATA_ONLY_DIR.as_posix()} " in setup


# ---------------------------------------------------------------------------------------------- unions


@pytest.mark.parametrize("name", list(kv.PAPER_UNIONS))
def test_paper_unions_are_union_vocabulary_of_the_lists_and_cocos_renames(name):
    vocab = known_vocabulary(name)
    parts = [known_vocabulary(part) for part in vocab.parts]
    coco = known_vocabulary("coco-stuff-171")
    expected = UnionVocabulary.from_datasets(
        [p.class_names for p in parts], synonyms=dict(coco.union_synonyms)
    )
    assert list(vocab.class_names) == expected.names
    union = vocab.to_union_vocabulary()
    for part in parts:  # every class of every part has its class in the union
        assert UNMAPPED not in union.index_map(part.class_names)


def test_unions_match_the_reference_files():
    def ours(name: str) -> set[str]:
        return set(known_vocabulary(name).class_names)

    def reference(path: str) -> set[str]:
        return {normalize_name(n) for n in REFERENCE[path]}

    assert len(REFERENCE["file/ade150ucoco.json"]) == 247 and ours("coco171+ade150") == reference(
        "file/ade150ucoco.json"
    )
    assert ours("coco171+ade150+in124") == reference("file/ade150ucoco.json")
    assert len(REFERENCE["file/ade847ucoco.json"]) == 913 and len(reference("file/ade847ucoco.json")) == 909
    assert ours("coco171+ade847") == ours("coco171+ade847+in585") == reference("file/ade847ucoco.json")
    assert ours("coco171+in124") == reference("notebook/ade124ucoco.json") - STALE_COCO
    assert ours("coco171+in585") == reference("notebook/ade585ucoco.json") - STALE_COCO | {"glass"}


def test_coco_renames_merge_coco_into_ade_names():
    union = known_vocabulary("coco171+ade150").to_union_vocabulary()
    assert union.index_of("wall-brick") == union.index_of("wall-other") == union.index_of("wall")
    assert union.canonical("tv") == "television receiver" and union.canonical("window-other") == "windowpane"
    assert "wall brick" not in known_vocabulary("coco171+ade150").class_names
    assert "wall-brick" in known_vocabulary("coco-stuff-171").class_names  # alone, COCO keeps its 171


def test_wordnet_synonyms_never_merge_another_parts_classes():
    vocab = known_vocabulary("coco171+in21k")
    union = vocab.to_union_vocabulary()
    assert union.canonical("napkin") == "napkin"  # not ImageNet-21K's "diaper (nappy)", whose lemma it is
    assert union.canonical("n03188531") == "diaper (nappy)"
    assert len(vocab) == 21922  # 81 of COCO's 160 names (after its renames) are no ImageNet-21K class name


# ---------------------------------------------------------------------------------------------- training


def test_train_option_fixes_the_vocabulary():
    args = parse_train_args(
        ["--vocabulary", "coco171+ade150", "--mask_datasets", "x", "--output_dir", "unused"]
    )[1]
    assert args.vocabulary == "coco171+ade150"
    target = known_target(args)
    assert target.frozen and target.names == list(known_vocabulary("coco171+ade150").class_names)
    coco = SimpleNamespace(name="coco", class_names=["person", "wall-brick", "tv", "not a class"])
    mapping = build_union_vocabulary([coco], None, target_vocabulary=target)
    ids = mapping.index_maps["coco"].tolist()
    assert ids[:3] == [
        target.index_of("person"),
        target.index_of("wall"),
        target.index_of("television receiver"),
    ]
    assert ids[3] == UNMAPPED and mapping.unmapped == {"coco": ["not a class"]}
    assert known_target(DataArguments(mask_datasets=["x"])) is None
    with pytest.raises(ValueError, match="needs datasets"):
        known_target(DataArguments(vocabulary="ade150"))
    with pytest.raises(ValueError, match="unknown vocabulary"):
        known_target(DataArguments(vocabulary="ade151", mask_datasets=["x"]))


def test_extra_classes_with_a_fixed_vocabulary_take_the_datasets_classes_they_name():
    """--vocabulary coco-stuff-171 --extra_classes imagenet-1k: a dataset's "goldfish" (ImageNet's, not COCO's)
    maps to the extra class instead of being ignored, and COCO's ids come first, unchanged."""
    from larvseg_hf.training.setup import with_extra_classes

    args = parse_train_args(
        ["--vocabulary", "coco-stuff-171", "--extra_classes", "imagenet-1k", "--image_datasets", "x"]
        + ["--output_dir", "unused"]
    )[1]
    coco = known_vocabulary("coco-stuff-171").to_union_vocabulary(frozen=True)
    imagenet = known_vocabulary("imagenet-1k")
    target = known_target(args)
    assert target.frozen and target.names[: len(coco)] == coco.names
    added = target.names[len(coco) :]
    assert "goldfish" in added and "cat" not in added  # COCO's cat stays COCO's (ImageNet has no bare "cat")
    assert len(target) == len(coco) + len(added) and len(added) > 900

    source = SimpleNamespace(name="pets", class_names=["cat", "goldfish", "not a class"])
    mapping = build_union_vocabulary([source], None, target_vocabulary=target)
    ids = mapping.index_maps["pets"].tolist()
    assert ids[:2] == [target.index_of("cat"), target.index_of("goldfish")]
    assert ids[1] >= len(coco) and ids[2] == UNMAPPED
    assert mapping.unmapped == {"pets": ["not a class"]}
    # Appending the extras after mapping then adds nothing: every one is in the vocabulary already.
    final = with_extra_classes(mapping, imagenet).vocabulary
    assert final.names == target.names
    # Without --vocabulary nothing is fixed: the datasets' union is extended after mapping, as before.
    assert known_target(DataArguments(image_datasets=["x"], extra_classes="imagenet-1k")) is None


def test_data_files_credit_their_source_and_ship_with_the_package():
    files = sorted((REPO / "larvseg_hf" / "vocabularies").glob("*.json"))
    assert len(files) == 6
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["name"] == path.stem and "HaojunYu1998/LarvSeg" in data["source"]
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "vocabularies/*.json" in package_data["larvseg_hf"]
