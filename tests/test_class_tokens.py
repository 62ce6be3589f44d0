import pytest
from transformers import CLIPTokenizer

from glass.data.classes import COCO_CLASSES
from glass.synth.class_tokens import class_text, class_token_groups
from glass.tiny.stable_diffusion import SUBWORD_SPLIT_WORDS, build_tiny_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_clip_tokenizer()


def test_tiny_tokenizer_reloads_and_encodes_identically(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = "A bunch of people at the ocean about to surf.; person hot dog refrigerator xylophone"
    assert reloaded(text).input_ids == tokenizer(text).input_ids
    assert len(reloaded) == len(tokenizer) and reloaded.model_max_length == 77


def test_common_words_are_single_tokens_and_some_single_words_split(tokenizer):
    for word in ("person", "bird", "surfboard", "dog", "bear", "people", "ocean"):
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    for word in SUBWORD_SPLIT_WORDS:
        assert word in COCO_CLASSES
        assert len(tokenizer(word, add_special_tokens=False).input_ids) >= 2, word


def test_multi_token_classes_get_all_their_positions(tokenizer):
    classes = ["person", "hot dog", "teddy bear", "parking meter", "refrigerator", "bird"]
    groups = class_token_groups(tokenizer, classes)
    ids = tokenizer(class_text(classes)).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert [len(group) for group in groups[:4]] == [1, 2, 2, 2]
    assert len(groups[4]) >= 2 and len(groups[5]) == 1
    # contiguous, in order, right after BOS, up to EOS
    flat = [position for group in groups for position in group]
    assert flat == list(range(1, len(ids) - 1))
    for name, group in zip(classes, groups):
        decoded = tokenizer.decode([ids[position] for position in group])
        assert decoded.replace(" ", "") == name.replace(" ", "")


def test_no_classes_give_no_groups(tokenizer):
    assert class_token_groups(tokenizer, []) == []


def test_class_text_longer_than_the_tokenizer_limit_is_a_clear_error(tokenizer):
    classes = ["refrigerator", "toothbrush", "broccoli"] * 6
    with pytest.raises(ValueError, match="refrigerator") as error:
        class_token_groups(tokenizer, classes)
    assert "77" in str(error.value)


class WordMergingTokenizer:
    """A tokenizer whose tokens straddle class names (so prefixes are not token prefixes)."""

    model_max_length = 77

    def __call__(self, text, add_special_tokens=True, verbose=True):
        squashed = text.replace(" ", "")
        ids = [ord(squashed[i]) * 1000 + ord(squashed[i + 1]) if i + 1 < len(squashed)
               else ord(squashed[i]) for i in range(0, len(squashed), 2)]
        return type("Encoding", (), {"input_ids": ([0] + ids + [1]) if add_special_tokens
                                     else ids})

    def decode(self, ids):
        return "".join(chr(i // 1000) + chr(i % 1000) if i >= 1000 else chr(i) for i in ids)


def test_tokens_that_straddle_class_names_are_refused():
    with pytest.raises(ValueError, match="cannot attribute|decode"):
        class_token_groups(WordMergingTokenizer(), ["cat", "dog"])
