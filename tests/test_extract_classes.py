"""Caption → COCO class extraction (glass.text.classes.extract_classes).

Needs the NLTK tagger and WordNet: tests/conftest.py points NLTK_DATA at ../shared/nltk_data
when the environment does not set it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nltk
import pytest

from glass.errors import MissingInput
from glass.data.classes import COCO_CATEGORY_IDS
from glass.text import extract_classes
from glass.text.nltk_resources import DOWNLOAD_COMMAND, ensure_nltk_data

DATA_DIR = Path(__file__).resolve().parent / "data"
DEV_SET = DATA_DIR / "captions_dev.jsonl"
HELDOUT_SET = DATA_DIR / "captions_heldout.jsonl"
P = "person"


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _accuracy(rows: list[dict]) -> tuple[float, list[str]]:
    failures = []
    for row in rows:
        got = extract_classes(row["caption"])
        if got != row["classes"]:
            failures.append(f"{row['caption']!r}: want {row['classes']}, got {got}")
    return 1 - len(failures) / len(rows), failures


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A hot dog with mustard on a bun.", ["hot dog"]),
        ("A teddy bear sitting on a shelf.", ["teddy bear"]),
        ("A woman using a hair drier.", [P, "hair drier"]),
        ("A woman using a hair dryer.", [P, "hair drier"]),
        ("A blow dryer on the counter.", ["hair drier"]),
        ("A cell phone on a desk.", ["cell phone"]),
        ("A cellphone and a smartphone.", ["cell phone"]),
        ("A man talking on his mobile phone.", [P, "cell phone"]),
        ("A wine glass next to a plate.", ["wine glass"]),
        ("A wineglass on the bar.", ["wine glass"]),
        ("A traffic light at an intersection.", ["traffic light"]),
        ("A stoplight turned red.", ["traffic light"]),
        ("A fire hydrant on the sidewalk.", ["fire hydrant"]),
        ("A hydrant on the corner.", ["fire hydrant"]),
        ("A stop sign at a corner.", ["stop sign"]),
        ("A parking meter on the street.", ["parking meter"]),
        ("A sports ball on the grass.", ["sports ball"]),
        ("A soccer ball in a net.", ["sports ball"]),
        ("A tennis ball on a court.", ["sports ball"]),
        ("A baseball bat leaning on a wall.", ["baseball bat"]),
        ("A baseball glove on a bench.", ["baseball glove", "bench"]),
        ("A catcher's mitt on the grass.", ["baseball glove"]),
        ("A tennis racket on a bench.", ["tennis racket", "bench"]),
        ("A tennis racquet on the ground.", ["tennis racket"]),
        ("A potted plant by a window.", ["potted plant"]),
        ("A houseplant on a shelf.", ["potted plant"]),
        ("A dining table set for dinner.", ["dining table"]),
        ("A family sitting at the kitchen table.", [P, "dining table"]),
    ],
)
def test_multi_word_classes_and_their_aliases(caption, expected):
    assert extract_classes(caption) == expected


def test_every_multi_word_class_is_matched_by_its_own_name():
    for name in (n for n in COCO_CATEGORY_IDS if " " in n):
        assert extract_classes(f"There is a {name} in the picture.") == [name], name


def test_every_class_is_matched_by_its_own_name():
    for name in COCO_CATEGORY_IDS:
        got = extract_classes(f"A photo of a {name} in the middle.")
        assert got == [name], (name, got)


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Three knives on a cutting board.", ["knife"]),
        ("Two computer mice next to a laptop.", ["mouse", "laptop"]),
        ("People crossing the street.", [P]),
        ("Men and women at a party.", [P]),
        ("Children feeding geese.", [P, "bird"]),
        ("Buses parked in a row.", ["bus"]),
        ("Several vases with flowers.", ["vase"]),
        ("Wine glasses on a shelf.", ["wine glass"]),
        ("Two hot dogs on a plate.", ["hot dog"]),
        ("Teddy bears on a bed.", ["teddy bear", "bed"]),
        ("Skis leaning against a wall.", ["skis"]),
        ("Sheep in a pasture.", ["sheep"]),
        ("Oxen pulling a plow.", ["cow"]),
    ],
)
def test_plurals(caption, expected):
    assert extract_classes(caption) == expected


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("A skier on a slope.", [P]),
        ("A little girl and her baby brother.", [P]),
        ("A motorbike parked outside.", ["motorcycle"]),
        ("A bike by the fence.", ["bicycle"]),
        ("A jet on the runway.", ["airplane"]),
        ("A sofa in the living room.", ["couch"]),
        ("A television on the wall.", ["tv"]),
        ("A doughnut on a napkin.", ["donut"]),
        ("A puppy and a kitten.", ["dog", "cat"]),
        ("An open fridge.", ["refrigerator"]),
        ("A taxi on the street.", ["car"]),
        ("A sailboat on a lake.", ["boat"]),
        ("A calf in the barn.", ["cow"]),
        ("A lamb in the grass.", ["sheep"]),
        ("A pony in a stable.", ["horse"]),
        ("A coffee mug on a desk.", ["cup"]),
        ("A remote control on the couch.", ["remote", "couch"]),
        ("A purse on a chair.", ["handbag", "chair"]),
        ("Luggage at the airport.", ["suitcase"]),
        ("A man wearing a necktie.", [P, "tie"]),
        ("A pigeon on a ledge.", ["bird"]),
        ("A stove in a kitchen.", ["oven"]),
    ],
)
def test_synonyms(caption, expected):
    assert extract_classes(caption) == expected


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("an orange shirt", []),
        ("a hot day", []),
        ("A man in an orange shirt.", [P]),
        ("An orange and white cat.", ["cat"]),
        ("The sky turned bright orange.", []),
        ("An orange on a plate.", ["orange"]),
        ("A pizza in a pizza oven.", ["pizza", "oven"]),
        ("A cat eating cat food.", ["cat"]),
        ("A remote mountain village.", []),
        ("A man wearing glasses.", [P]),
        ("A glass door.", []),
        ("Kids playing baseball.", [P]),
        ("A batter at bat.", [P]),
        ("An empty street with no cars.", []),
        ("A couple of dogs on a couch.", ["dog", "couch"]),
        ("A bag of chips.", []),
        ("A giraffe eating plants.", ["giraffe"]),
        ("The boat began to sink.", ["boat"]),
    ],
)
def test_adjectives_modifiers_and_non_objects_give_nothing(caption, expected):
    assert extract_classes(caption) == expected


def test_order_of_first_appearance_without_duplicates():
    caption = "A dog chases a cat while another dog and two men watch the cat and a person."
    assert extract_classes(caption) == ["dog", "cat", P]


def test_phrase_and_its_head_word_are_separate_classes():
    assert extract_classes("A girl eating a hot dog while her dog watches.") == [
        P, "hot dog", "dog"]
    assert extract_classes("A bear next to a teddy bear.") == ["bear", "teddy bear"]


@pytest.mark.parametrize("caption", ["", " ", "   \t\n  ", "\u3000", "...", "!?"])
def test_empty_and_whitespace_captions(caption):
    assert extract_classes(caption) == []


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Un café avec une femme — a woman drinking coffee at a café.", [P]),
        ("A dog’s toy next to a cat’s bowl.", ["dog", "cat", "bowl"]),  # curly apostrophes
        ("Ｔｗｏ ｄｏｇｓ in the snow.", ["dog"]),  # full-width letters (NFKC)
        ("一只猫坐在椅子上", []),
        ("🍕 a pizza with 🍄 mushrooms", ["pizza"]),
        ("A naïve painting of a cat.", ["cat"]),
        ("A T.V. on a stand.", ["tv"]),
        ("A man on a cell-phone.", [P, "cell phone"]),
        ("A kitten napping on a couch 🛋️ 😻", ["cat", "couch"]),  # emoji are no nouns
        ("Two bananas and a donut side by side.", ["banana", "donut"]),  # idiom, no compound
    ],
)
def test_non_ascii_and_tokenisation(caption, expected):
    assert extract_classes(caption) == expected


def test_long_caption_is_correct_and_fast():
    sentence = "A man riding a horse next to a dog and a cat on a couch near a bus. "
    caption = (sentence * (5000 // len(sentence) + 1))[:5000]
    extract_classes("warm up the tagger")
    started = time.perf_counter()
    got = extract_classes(caption)
    elapsed = time.perf_counter() - started
    assert got == [P, "horse", "dog", "cat", "couch", "bus"]
    # ~35 ms on a laptop-class CPU; the bound leaves room for slow CI machines.
    assert elapsed < 0.5, f"5000-char caption took {elapsed * 1000:.0f} ms"


@pytest.mark.parametrize("not_a_caption", [None, b"a dog", 42, ["a dog"]])
def test_non_str_input_raises_type_error(not_a_caption):
    with pytest.raises(TypeError, match="expects a caption str"):
        extract_classes(not_a_caption)


def test_results_are_official_coco_names():
    for row in _read_jsonl(DEV_SET):
        assert set(extract_classes(row["caption"])) <= set(COCO_CATEGORY_IDS)


def test_dev_set_is_well_formed():
    rows = _read_jsonl(DEV_SET)
    assert len(rows) >= 150
    for row in rows:
        assert isinstance(row["caption"], str)
        assert all(name in COCO_CATEGORY_IDS for name in row["classes"]), row
        assert len(set(row["classes"])) == len(row["classes"]), row


def test_dev_set_accuracy():
    accuracy, failures = _accuracy(_read_jsonl(DEV_SET))
    assert accuracy >= 0.98, "\n".join(failures)


def test_heldout_set_accuracy():
    if not HELDOUT_SET.is_file():
        pytest.skip(f"held-out caption set {HELDOUT_SET} is not there (written separately)")
    accuracy, failures = _accuracy(_read_jsonl(HELDOUT_SET))
    assert accuracy >= 0.95, f"held-out accuracy {accuracy:.3f}:\n" + "\n".join(failures)


@pytest.fixture
def fresh_nltk_check(monkeypatch):
    """Forget the cached successful check before and after the test."""
    ensure_nltk_data.cache_clear()
    yield
    ensure_nltk_data.cache_clear()


def test_missing_nltk_data_raises_with_the_fix(fresh_nltk_check, monkeypatch, tmp_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    downloads = []
    monkeypatch.setattr(nltk, "download", lambda name, **kwargs: downloads.append(name) or False)
    with pytest.raises(MissingInput) as error:
        ensure_nltk_data()
    message = str(error.value)
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet" in message
    assert DOWNLOAD_COMMAND in message
    assert "taggers/averaged_perceptron_tagger_eng" in message
    assert "corpora/wordnet" in message
    assert str(tmp_path) in message  # where NLTK looked
    assert "NLTK_DATA" in message
    assert sorted(downloads) == ["averaged_perceptron_tagger_eng", "wordnet"]  # one try each


def test_nltk_check_passes_and_is_cached(fresh_nltk_check, monkeypatch):
    ensure_nltk_data()
    monkeypatch.setattr(nltk.data, "path", [])  # a cached success does not look again
    ensure_nltk_data()
