"""Caption → COCO class names: which of the 80 COCO classes a caption mentions as objects.

GLASS (Sec. 3) and Dataset Diffusion obtain the class labels of a generated image from its
caption: a POS tagger finds the nouns and the nouns that are COCO class labels are kept.
This module does the same with NLTK (Treebank tokenizer, averaged-perceptron tagger,
WordNet noun lemmatiser), plus what a careful human annotator does on top of "is it a noun":

1. Multi-word classes and aliases are matched as whole phrases before single words
   ("hot dog" is not a dog, "teddy bear" is not a bear, "clock tower" shows a clock).
2. Common words map to their class through a plain synonym table (``WORD_TO_CLASS``):
   man/woman/skier → person, sofa → couch, plane → airplane, fridge → refrigerator, ...
3. A singular noun directly followed by another noun is a modifier of that noun, not an
   object ("an orange shirt", "a pizza oven" = oven, "a dog bed" = bed, "cat food" = nothing),
   unless the second noun names a part or piece of it ("pizza slice", "toilet seat",
   "giraffe neck", "bear cub"), in which case the modifier object is in the picture.
4. A few words need context (documented where they are handled): orange (fruit or colour),
   glass (wine glass, drinking glass = cup, eyeglasses, material), bat ("at bat"), glove
   (baseball glove only in a baseball context), sport names ("a football" is a ball,
   "playing football" is not), bag, plant, and "no"/"without" negation ("no cars").

Public API: ``extract_classes(caption) -> list[str]`` (official COCO names, in order of first
appearance, no duplicates).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from glass.data.classes import COCO_CATEGORY_IDS
from glass.text.nltk_resources import ensure_nltk_data

PERSON = "person"

# --------------------------------------------------------------------------------------------
# Vocabulary. Keys are lower-case singular words; plurals are reduced to these by the WordNet
# noun lemmatiser (knives → knife, mice → mouse, men → man), so only irregular forms the
# lemmatiser keeps as they are ("people", "busses") are listed explicitly.
# --------------------------------------------------------------------------------------------

# Words that refer to people. COCO's "person" covers every human, whatever the role.
PERSON_WORDS: frozenset[str] = frozenset("""
    person persons people folk folks human individual someone somebody
    man gentleman guy lad woman lady boy girl child kid baby infant toddler teenager teen
    youngster youth adult father mother dad mom mum son daughter brother sister husband wife
    bride groom boyfriend girlfriend grandmother grandfather grandma grandpa friend
    family couple crowd team audience spectator onlooker tourist traveler traveller passenger
    commuter pedestrian shopper customer patron guest vendor
    player athlete skier surfer windsurfer kitesurfer kiteboarder bodyboarder paddleboarder
    parasailer skateboarder skater snowboarder rider biker cyclist bicyclist motorcyclist
    jockey cowboy swimmer diver hiker climber
    pitcher catcher batter hitter umpire referee goalie quarterback outfielder infielder
    shortstop baseman batsman
    driver chef cook baker waiter waitress worker workman laborer mechanic farmer fisherman
    conductor businessman businesswoman officer policeman policewoman police cop soldier firefighter
    fireman pilot doctor nurse student teacher clown performer musician photographer
""".split())

# Other words and their COCO class (singular forms). The COCO names themselves are added
# below. Choices follow COCO's own annotation conventions, e.g. burgers are labelled
# "sandwich", stoves "oven", computer monitors "tv" (VOC's "tvmonitor"), Wii remotes "remote".
SYNONYM_TO_CLASS: dict[str, str] = {
    # vehicles
    "bike": "bicycle",
    "motorbike": "motorcycle", "scooter": "motorcycle", "moped": "motorcycle",
    "dirtbike": "motorcycle",
    "automobile": "car", "taxi": "car", "cab": "car", "suv": "car", "sedan": "car",
    "van": "car", "minivan": "car", "jeep": "car", "limo": "car", "limousine": "car",
    "hatchback": "car",
    "plane": "airplane", "aeroplane": "airplane", "airliner": "airplane", "jet": "airplane",
    "jetliner": "airplane", "aircraft": "airplane", "biplane": "airplane",
    "seaplane": "airplane",
    "busses": "bus", "minibus": "bus",
    "locomotive": "train", "tram": "train", "streetcar": "train", "trolley": "train",
    "lorry": "truck", "pickup": "truck", "firetruck": "truck",
    "ship": "boat", "sailboat": "boat", "canoe": "boat", "kayak": "boat", "yacht": "boat",
    "ferry": "boat", "rowboat": "boat", "speedboat": "boat", "motorboat": "boat",
    "tugboat": "boat", "steamboat": "boat", "catamaran": "boat", "gondola": "boat",
    "barge": "boat", "dinghy": "boat",
    # street objects
    "stoplight": "traffic light",
    "hydrant": "fire hydrant",
    # animals
    "pigeon": "bird", "dove": "bird", "seagull": "bird", "gull": "bird", "duck": "bird",
    "goose": "bird", "swan": "bird", "parrot": "bird", "owl": "bird", "eagle": "bird",
    "hawk": "bird", "falcon": "bird", "sparrow": "bird", "robin": "bird", "finch": "bird",
    "pelican": "bird", "heron": "bird", "egret": "bird", "stork": "bird", "flamingo": "bird",
    "penguin": "bird", "peacock": "bird", "ostrich": "bird", "hen": "bird", "rooster": "bird",
    "hummingbird": "bird", "woodpecker": "bird", "seabird": "bird", "songbird": "bird",
    "bluebird": "bird", "blackbird": "bird", "crow": "bird", "raven": "bird",
    "vulture": "bird", "albatross": "bird", "parakeet": "bird", "cockatoo": "bird",
    "kitten": "cat", "kitty": "cat", "tabby": "cat", "feline": "cat",
    "puppy": "dog", "pup": "dog", "doggy": "dog", "doggie": "dog", "hound": "dog",
    "poodle": "dog", "terrier": "dog", "labrador": "dog", "retriever": "dog",
    "bulldog": "dog", "beagle": "dog", "chihuahua": "dog", "dachshund": "dog",
    "husky": "dog", "collie": "dog", "pug": "dog", "corgi": "dog", "dalmatian": "dog",
    "greyhound": "dog", "sheepdog": "dog", "spaniel": "dog", "schnauzer": "dog",
    "pony": "horse", "foal": "horse", "stallion": "horse", "mare": "horse", "colt": "horse",
    "horseback": "horse",
    "lamb": "sheep", "ewe": "sheep",
    "cattle": "cow", "calf": "cow", "bull": "cow", "ox": "cow", "heifer": "cow",
    "longhorn": "cow",
    "grizzly": "bear",
    # accessories
    "knapsack": "backpack", "rucksack": "backpack",
    "parasol": "umbrella",
    "purse": "handbag", "bag": "handbag",
    "necktie": "tie", "bowtie": "tie",
    "luggage": "suitcase", "baggage": "suitcase",
    # sports
    "ski": "skis",
    "ball": "sports ball", "football": "sports ball", "basketball": "sports ball",
    "volleyball": "sports ball", "baseball": "sports ball", "softball": "sports ball",
    "bat": "baseball bat",
    "mitt": "baseball glove", "glove": "baseball glove",
    "racket": "tennis racket", "racquet": "tennis racket",
    # kitchen and food
    "glass": "cup",  # resolved by _resolve_glass: wine glass, cup, eyeglasses or material
    "wineglass": "wine glass",
    "mug": "cup", "teacup": "cup",
    "burger": "sandwich", "hamburger": "sandwich", "cheeseburger": "sandwich",
    "hoagie": "sandwich",
    "tangerine": "orange", "clementine": "orange",
    "hotdog": "hot dog",
    "doughnut": "donut",
    "cupcake": "cake", "cheesecake": "cake",
    # furniture and household
    "armchair": "chair", "recliner": "chair", "highchair": "chair",
    "sofa": "couch", "loveseat": "couch", "futon": "couch",
    "plant": "potted plant", "houseplant": "potted plant",
    "table": "dining table",
    "urinal": "toilet",
    "television": "tv", "monitor": "tv", "flatscreen": "tv",
    "macbook": "laptop",
    "controller": "remote",
    "phone": "cell phone", "cellphone": "cell phone", "smartphone": "cell phone",
    "iphone": "cell phone", "telephone": "cell phone",
    "stove": "oven", "stovetop": "oven",
    "fridge": "refrigerator", "freezer": "refrigerator",
    "textbook": "book",
    "scissor": "scissors",
    "teddy": "teddy bear",
    "hairdryer": "hair drier", "blowdryer": "hair drier",
}

# Multi-word names → class (None: a phrase that looks like a class but is not one, e.g. a
# "power plant" is no potted plant). Matched longest first, before single words.
PHRASE_TO_CLASS: dict[str, str | None] = {
    **{name: name for name in COCO_CATEGORY_IDS if " " in name},
    "stop light": "traffic light", "traffic signal": "traffic light",
    "fire plug": "fire hydrant",
    "soccer ball": "sports ball", "tennis ball": "sports ball", "beach ball": "sports ball",
    "golf ball": "sports ball",
    "baseball mitt": "baseball glove", "catcher mitt": "baseball glove",
    "catcher 's mitt": "baseball glove",  # the mitt, not (necessarily) a catcher
    "tennis racquet": "tennis racket",
    "champagne glass": "wine glass", "martini glass": "wine glass",
    "champagne flute": "wine glass",
    "corn dog": "hot dog", "chili dog": "hot dog",
    "house plant": "potted plant", "pot plant": "potted plant",
    "plant pot": "potted plant", "flower pot": "potted plant",
    "power plant": None, "processing plant": None, "treatment plant": None,
    "mobile phone": "cell phone", "smart phone": "cell phone",
    # A stuffed animal in a COCO photo is nearly always labelled "teddy bear"; "stuffed toy"
    # is left out: it names no animal, so an annotator would not call it a bear.
    "stuffed animal": "teddy bear", "stuffed bear": "teddy bear",
    "hair dryer": "hair drier", "blow dryer": "hair drier", "blow drier": "hair drier",
    "remote control": "remote", "remote controlled": None,
    "laptop computer": "laptop", "notebook computer": "laptop",
    "microwave oven": "microwave",
    "toilet bowl": "toilet",
    "super bowl": None, "world cup": None,
    "train car": "train", "subway car": "train", "rail car": "train",
    "railroad car": "train", "street car": "train", "cable car": None,
    "clock tower": "clock",
    "tv set": "tv", "television set": "tv", "flat screen": "tv",
    "truck bed": "truck", "flower bed": None, "river bed": None, "sea bed": None,
    "dirt bike": "motorcycle", "motor bike": "motorcycle", "motor cycle": "motorcycle",
    "motor scooter": "motorcycle",
    "double decker": "bus",
    "air plane": "airplane",
    "german shepherd": "dog",
    "skate board": "skateboard", "surf board": "surfboard", "snow board": "snowboard",
    "tooth brush": "toothbrush", "back pack": "backpack", "hand bag": "handbag",
    "tea cup": "cup",
    # Possessive idioms that name a place or thing, not a person who is there.
    "driver 's seat": None, "driver 's side": None, "passenger 's seat": None,
    "passenger 's side": None,
    "fork in the road": None, "man made": None, "magnifying glass": None,
    "oven mitt": None, "car seat": None, "zebra crossing": None, "baby monitor": None,
    "dvd player": None, "cd player": None, "record player": None, "mp3 player": None,
    "media player": None, "video player": None,
}
LONGEST_PHRASE = max(len(phrase.split()) for phrase in PHRASE_TO_CLASS)

# Second nouns that name a part, piece, group or young of the noun before them: in
# "pizza slice", "toilet seat", "giraffe neck", "elephant herd", "bear cub" the first noun's
# object is in the picture, so rule 3 (modifier → not an object) does not apply.
PART_HEADS: frozenset[str] = frozenset("""
    slice piece half wedge chunk peel floret stalk stem spear stick bunch crust topping
    herd flock pack family
    cub calf foal
    head face neck ear eye nose mouth tongue leg paw hoof tail fur mane horn tusk trunk wing
    feather beak stripe body back
    seat lid tank handle door window wheel tire tyre hood roof mirror dashboard headlight
    engine windshield interior cockpit propeller pedal handlebar cushion frame headboard
    mattress top faucet basin magnet
    screen keyboard hand dial display button
""".split())

# Core words for humans that never act as compound modifiers in captions: after "man" a
# noun-tagged word is a mis-tagged verb ("a man blow drying his hair"), not a compound head.
HUMAN_HEAD_NOUNS: frozenset[str] = frozenset(
    {"person", "people", "man", "woman", "boy", "girl", "lady", "guy", "gentleman"}
)
# Kinship words after "its" belong to an animal ("a calf next to its mother").
KINSHIP_WORDS: frozenset[str] = frozenset(
    {"mother", "father", "mom", "mum", "dad", "brother", "sister", "son", "daughter", "family"}
)

# Adverbial idioms that start with a noun: "an apple and an orange side by side" has no
# compound "orange side".
ADVERBIAL_IDIOMS: frozenset[str] = frozenset({
    "side by side", "hand in hand", "back to back", "face to face", "head to head",
    "nose to nose", "arm in arm", "cheek to cheek",
})

# Irregular verbs whose past participle is their base form; see _is_compound_modifier.
BASE_FORM_PARTICIPLES: frozenset[str] = frozenset(
    {"cut", "set", "put", "hit", "shut", "split", "spread", "cast", "let", "left", "laid"}
)

# Heads that name the young of the animal before them ("elephant calf" is an elephant, not a
# cow); they are consumed by that animal instead of adding their own synonym class.
YOUNG_ANIMAL_HEADS: frozenset[str] = frozenset({"calf", "cub", "foal", "pup", "puppy"})
ANIMAL_CLASSES: frozenset[str] = frozenset({
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
})

DETERMINERS: frozenset[str] = frozenset("""
    a an the this that these those his her their its my our your one two three four five six
    seven eight nine ten some several many few each every another both any other
    various multiple numerous couple pair lots lot
""".split())
NEGATORS: frozenset[str] = frozenset({"no", "without"})
# Tags the determiner search may skip over: adjectives, numbers, adverbs, participles
# ("a small white dog", "two sleeping cats").
PRENOMINAL_TAGS: frozenset[str] = frozenset(
    {"JJ", "JJR", "JJS", "CD", "RB", "RBR", "RBS", "VBN", "VBG"}
)

COLOUR_WORDS: frozenset[str] = frozenset("""
    white black red blue green yellow brown gray grey pink purple orange tan silver gold beige
    colored coloured colorful colourful bright dark light pale deep neon burnt
""".split())
BAKING_CONTEXT: frozenset[str] = frozenset("""
    cake pancake cupcake cookie muffin brownie waffle dough flour whisk mixer mixing bake
    baking pan bowl
""".split())
BASEBALL_CONTEXT: frozenset[str] = frozenset("""
    baseball softball bat batter pitcher catcher umpire mitt dugout inning mound pitch
    infield outfield outfielder infielder shortstop baseman ballpark
    swing swings swinging swung
""".split())
WINE_WORDS: frozenset[str] = frozenset({"wine", "champagne", "prosecco", "sherry", "martini"})
EATING_VERBS: frozenset[str] = frozenset("""
    eat eats eating ate graze grazes grazing munch munches munching chew chews chewing
    feed feeds feeding nibble nibbles nibbling
""".split())
# Bags that are not handbags: COCO's "handbag" is a bag carried as an accessory.
NON_HANDBAG_BAG_MODIFIERS: frozenset[str] = frozenset("""
    plastic paper trash garbage rubbish grocery sleeping tea bean punching sand ice lunch
    gift laundry feed air golf cement zip ziploc ziplock chip chips bread
""".split())
# Sport names that are the ball only when counted or determined ("a football", "two
# basketballs"), not when they name the game ("playing football", "football player").
BALL_SPORTS: frozenset[str] = frozenset(
    {"football", "basketball", "volleyball", "baseball", "softball"}
)
# Collective/role nouns that stop being people (or handbags) before "of": "a couple of
# dogs", "a family of elephants", "a pitcher of beer", "a bag of chips".
NOT_BEFORE_OF: frozenset[str] = frozenset({"couple", "family", "team", "crowd", "pitcher", "bag"})


def _build_word_to_class() -> dict[str, str]:
    table = {name: name for name in COCO_CATEGORY_IDS if " " not in name}
    table.update({word: PERSON for word in PERSON_WORDS})
    table.update(SYNONYM_TO_CLASS)
    return table


WORD_TO_CLASS: dict[str, str] = _build_word_to_class()
assert set(WORD_TO_CLASS.values()) <= set(COCO_CATEGORY_IDS)
assert {c for c in PHRASE_TO_CLASS.values() if c} <= set(COCO_CATEGORY_IDS)


# --------------------------------------------------------------------------------------------
# Text normalisation and tokenisation
# --------------------------------------------------------------------------------------------

_APOSTROPHES = re.compile(r"[\u2018\u2019\u201b\u02bc\u00b4`]")
_QUOTES = re.compile(r"[\u201c\u201d\u201e\u00ab\u00bb]")
# A dash joining two words ("cell-phone", "hot-dog", "horse-drawn") is a space.
_WORD_DASH = re.compile(r"(?<=\w)[-\u2010\u2011\u2012\u2013](?=\w)")
# Emoji and other symbols (Unicode category S*) carry no words; left in, the tagger calls them
# nouns and "a bed 🛏️" would look like a compound.
_SYMBOL_CATEGORIES = ("So", "Sk", "Sm", "Sc")
_TV_ABBREVIATION = re.compile(r"\bt\.\s?v\.?(?=\W|$)", re.IGNORECASE)
# Treebank only splits the caption-final period; split every sentence-ending one so that
# "horse. a dog" does not yield the token "horse.".
_SENTENCE_PERIOD = re.compile(r"(?<=[^\W\d])\.(?=\s|$)")


def _is_symbol(character: str) -> bool:
    # Emoji variation selectors and joiners (U+FE0F, U+200D) travel with the symbols.
    return unicodedata.category(character) in _SYMBOL_CATEGORIES or character in "\ufe0f\u200d"


def normalize_caption(caption: str) -> str:
    """Unicode-normalise a caption and undo spellings that would hide a class word."""
    text = unicodedata.normalize("NFKC", caption)
    text = _APOSTROPHES.sub("'", text)
    text = _QUOTES.sub('"', text)
    text = "".join(" " if _is_symbol(ch) else ch for ch in text)
    text = _TV_ABBREVIATION.sub("tv", text)
    text = _WORD_DASH.sub(" ", text)
    text = _SENTENCE_PERIOD.sub(" . ", text)
    return " ".join(text.split())


def _case_for_tagging(text: str) -> str:
    # The tagger was trained on newswire case: in ALL-CAPS or Title Case captions every word
    # looks like a proper noun (NNP), which would make verbs look like compound heads.
    words = re.findall(r"[^\W\d_]+", text)
    capitalised = sum(word[0].isupper() for word in words)
    if words and (text.upper() == text or capitalised > 0.6 * len(words) > 1):
        return text.lower()
    return text


@dataclass(frozen=True)
class Token:
    text: str  # lower-cased surface form
    tag: str  # Penn Treebank POS tag
    lemma: str  # singular noun form of ``text`` (see _noun_lemma)

    @property
    def is_plural(self) -> bool:
        return self.tag in ("NNS", "NNPS") or self.lemma != self.text

    @property
    def is_possessive_marker(self) -> bool:
        return self.text in ("'s", "'")


@functools.cache
def _nlp():
    """The tokenizer, tagger, lemmatiser and WordNet reader, built once per process."""
    ensure_nltk_data()
    from nltk.corpus import wordnet
    from nltk.stem import WordNetLemmatizer
    from nltk.tag.perceptron import PerceptronTagger
    from nltk.tokenize import TreebankWordTokenizer

    # nltk.pos_tag would reload the tagger's JSON model on every call; keep one instance.
    return TreebankWordTokenizer(), PerceptronTagger(), WordNetLemmatizer(), wordnet


@functools.cache
def _vocabulary() -> frozenset[str]:
    phrase_words = {word for phrase in PHRASE_TO_CLASS for word in phrase.split()}
    return frozenset(WORD_TO_CLASS) | phrase_words | PART_HEADS


@functools.lru_cache(maxsize=100_000)
def _noun_lemma(word: str) -> str:
    """Singular of a noun. WordNet's lemmatiser only reduces plurals whose singular it
    knows, and prefers rare words ("vases" → "vas", "men" → "men"), so a regular or -men
    singular that is in our vocabulary wins ("vases" → "vase", "kitesurfers" → "kitesurfer")."""
    _, _, lemmatizer, _ = _nlp()
    wordnet_lemma = lemmatizer.lemmatize(word, "n")
    candidates = [word]
    if word.endswith("men"):
        candidates.append(word[:-3] + "man")
    if word.endswith("ies"):
        candidates.append(word[:-3] + "y")
    if word.endswith("es"):
        candidates.append(word[:-2])
    if word.endswith("s"):
        candidates.append(word[:-1])
    candidates.append(wordnet_lemma)
    vocabulary = _vocabulary()
    return next((c for c in candidates if c in vocabulary), wordnet_lemma)


_SENTENCE_END = frozenset({".", "!", "?", ";"})
UNTAGGED = "-NONE-"  # tag of words in sentences that cannot mention a class (not tagged)


def _split_sentences(words: list[str]) -> list[list[str]]:
    sentences, current = [], []
    for word in words:
        current.append(word)
        if word in _SENTENCE_END:
            sentences.append(current)
            current = []
    return sentences + [current] if current else sentences


def _tokenize_and_tag(text: str) -> list[Token]:
    """Tokens of the whole caption, POS-tagged sentence by sentence.

    The tagger is the slow step (~30 µs a word), so sentences without any vocabulary word
    are not tagged: they cannot yield a class, and their words still serve as context.
    """
    tokenizer, tagger, _, _ = _nlp()
    vocabulary = _vocabulary()
    tokens: list[Token] = []
    for sentence in _split_sentences(tokenizer.tokenize(_case_for_tagging(text))):
        lowered = [word.lower() for word in sentence]
        lemmas = [_noun_lemma(word) for word in lowered]
        if vocabulary.isdisjoint(lowered) and vocabulary.isdisjoint(lemmas):
            tags = [UNTAGGED] * len(sentence)
        else:
            tags = [tag for _, tag in tagger.tag(sentence)]
        tokens.extend(map(Token, lowered, tags, lemmas))
    return tokens


# --------------------------------------------------------------------------------------------
# WordNet questions (cached: captions repeat the same few hundred words)
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=100_000)
def _has_non_noun_reading(word: str) -> bool:
    """True if WordNet also knows ``word`` as a verb or adjective (tie, sink, orange, bear)."""
    wordnet = _nlp()[3]
    return any(wordnet.synsets(word, pos) for pos in ("v", "a", "s"))


@functools.lru_cache(maxsize=100_000)
def _can_be_noun(word: str) -> bool:
    """False only for words WordNet knows, but not as nouns ("drawn", "eat", "snowy")."""
    wordnet = _nlp()[3]
    if wordnet.morphy(word, "n") is not None or word in WORD_TO_CLASS:
        return True
    return not any(wordnet.synsets(word, pos) for pos in ("v", "a", "s", "r"))


@functools.lru_cache(maxsize=100_000)
def _mostly_a_verb(word: str) -> bool:
    """Whether WordNet's SemCor counts use ``word`` (e.g. "walks") more as verb than noun."""
    wordnet = _nlp()[3]

    def usage(pos: str) -> int:
        base = wordnet.morphy(word, pos)
        if base is None:
            return 0
        return sum(
            lemma.count()
            for synset in wordnet.synsets(base, pos)
            for lemma in synset.lemmas()
            if lemma.name().lower() == base
        )

    return usage("v") > usage("n")


@functools.lru_cache(maxsize=100_000)
def _is_inflected_verb_form(word: str) -> bool:
    """"walks", "sleeping" (but not "dress", "ceiling"): an -s/-ing form of a verb that
    WordNet's SemCor counts use more as verb than as noun."""
    if not word.endswith(("s", "ing")):
        return False
    base = _nlp()[3].morphy(word, "v")
    return base is not None and base != word and _mostly_a_verb(word)


# --------------------------------------------------------------------------------------------
# Context rules
# --------------------------------------------------------------------------------------------

def _has_determiner_before(tokens: list[Token], i: int) -> bool:
    """Whether a determiner, number or possessive opens the noun phrase that ends at ``i``."""
    j = i - 1
    while j >= 0 and tokens[j].tag in PRENOMINAL_TAGS and tokens[j].text not in DETERMINERS:
        j -= 1
    if j < 0:
        return False
    before = tokens[j]
    return (
        before.text in DETERMINERS
        or before.tag in ("DT", "PRP$", "CD")
        or before.is_possessive_marker
    )


def _phrase_at(tokens: list[Token], i: int) -> tuple[str | None, int] | None:
    """(class or None, end index) of the longest known phrase starting at ``i``, if any."""
    for length in range(min(LONGEST_PHRASE, len(tokens) - i), 1, -1):
        key = " ".join(token.lemma for token in tokens[i : i + length])
        if key in _phrase_table():
            return _phrase_table()[key], i + length
    return None


@functools.cache
def _phrase_table() -> dict[str, str | None]:
    # Keys go through the same lemmatiser as the caption, so "hot dogs" and "wine glasses"
    # match "hot dog" and "wine glass" ("sports ball" is stored as "sport ball").
    return {
        " ".join(_noun_lemma(word) for word in phrase.split()): cls
        for phrase, cls in PHRASE_TO_CLASS.items()
    }


def _is_compound_modifier(tokens: list[Token], i: int) -> bool:
    """Whether the noun at ``i`` only modifies the next noun ("orange shirt", "dog bed").

    English compounds put the modifier first and in the singular, so a plural never
    modifies, and a possessive ("dog's") is an object of its own. Dataset Diffusion keeps
    every noun; we drop modifiers because "a pizza oven" does not show a pizza.
    """
    token = tokens[i]
    if token.is_plural or token.lemma in HUMAN_HEAD_NOUNS or i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1]
    if nxt.is_possessive_marker or nxt.lemma in PART_HEADS:
        return False
    if " ".join(t.text for t in tokens[i + 1 : i + 4]) in ADVERBIAL_IDIOMS:
        return False
    if _phrase_at(tokens, i + 1) is not None:
        return True  # "bus stop sign": "stop sign" is a noun phrase
    if nxt.text in WORD_TO_CLASS or nxt.lemma in WORD_TO_CLASS:
        # A class word is a noun even when the tagger says JJ ("a baby/NN elephant/JJ"), or
        # VB* if it cannot be a verb ("a toaster oven/VBN").
        return not (nxt.tag.startswith("VB") and _has_non_noun_reading(nxt.text))
    if not nxt.tag.startswith("NN") or not _can_be_noun(nxt.text):
        return False
    # The tagger sometimes calls a verb form a noun ("a bear walks", "a kitten sleeping"):
    # an -s or -ing word used mostly as a verb (WordNet SemCor counts) is the verb of the
    # noun before it. Participles after a noun keep it an object anyway ("dog sledding").
    if _is_inflected_verb_form(nxt.text):
        return False
    # Participles spelled like their base form are tagged NN after a noun: "a sandwich cut
    # in half", "a table set for two". Followed by a preposition they are the verb.
    after_next = tokens[i + 2] if i + 2 < len(tokens) else None
    return not (
        nxt.text in BASE_FORM_PARTICIPLES
        and after_next is not None
        and after_next.tag in ("IN", "RP", "TO", "DT")
    )


def _is_negated(tokens: list[Token], i: int) -> bool:
    """Whether "no"/"without" governs the noun at ``i`` ("no cars", "without a dog")."""
    j = i - 1
    while j >= 0:
        token = tokens[j]
        if token.text in NEGATORS:
            return True
        if token.text in DETERMINERS:  # "without a dog", but not "no cats and a dog"
            return j > 0 and tokens[j - 1].text == "without"
        if not (token.tag in PRENOMINAL_TAGS or token.tag.startswith("NN")
                or token.text in ("or", "nor", ",")):
            return False
        j -= 1
    return False


def _looks_like_noun(tokens: list[Token], i: int) -> bool:
    """The paper keeps nouns only; we also trust a determiner over a wrong tag ("a bear/JJ")."""
    token = tokens[i]
    if token.tag.startswith("NN"):
        return True
    if not _has_non_noun_reading(token.text):
        return True  # e.g. "frisbee" tagged VBN in "people play frisbee": it can only be a noun
    if token.tag in ("IN", "TO", "CC", "MD"):
        return False
    # Coordinated with a noun, it is a noun: "a fork and knife/VB".
    if i > 1 and tokens[i - 1].text in ("and", "or", ",") and tokens[i - 2].tag.startswith("NN"):
        return True
    # A finite verb cannot follow a participle, so it is that verb's object: "riding skis/VBP".
    if token.tag in ("VBP", "VBZ", "VBD") and i > 0 and tokens[i - 1].tag in ("VBG", "VBN"):
        return True
    # A preposition or a determiner opens a noun phrase, so the word is no finite verb:
    # "a pile of skis/JJ", "a bear/JJ walks".
    after_preposition = i > 0 and tokens[i - 1].tag == "IN" and tokens[i - 1].text != "to"
    return after_preposition or _has_determiner_before(tokens, i)


def _words_near(tokens: list[Token], i: int, before: int, after: int) -> set[str]:
    return {token.text for token in tokens[max(0, i - before) : i + after + 1]}


def _resolve_orange(tokens: list[Token], i: int, cls: str) -> str | None:
    # The only COCO class that is also a common colour. The fruit is counted or determined
    # ("an orange", "two oranges") or has a piece noun after it ("orange slices"); a colour
    # is coordinated with other colours or intensified ("orange and white", "bright orange").
    token = tokens[i]
    after = tokens[i + 1 : i + 3]
    if after and after[0].text in ("and", "or", ",") and len(after) > 1:
        if after[1].text in COLOUR_WORDS:
            return None
    if after and after[0].text in COLOUR_WORDS | {"ish", "colored", "coloured", "hued"}:
        return None
    if i > 0 and tokens[i - 1].text in COLOUR_WORDS:
        return None
    if token.is_plural or (after and after[0].lemma in PART_HEADS):
        return cls
    if i > 1 and tokens[i - 1].text == "of" and tokens[i - 2].lemma in PART_HEADS:
        return cls  # "a slice of orange" (but "shades of orange" is a colour)
    return cls if _has_determiner_before(tokens, i) else None


def _resolve_ball_sport(tokens: list[Token], i: int, cls: str) -> str | None:
    token = tokens[i]
    return cls if token.is_plural or _has_determiner_before(tokens, i) else None


def _resolve_bat(tokens: list[Token], i: int, cls: str) -> str | None:
    # "at bat" / "up to bat" is the batter's turn, not the bat. The animal is rare in
    # COCO-style captions, so any other noun "bat" is the baseball bat.
    return None if i > 0 and tokens[i - 1].text in ("at", "to") else cls


def _has_baseball_context(tokens: list[Token], i: int) -> bool:
    return any(t.lemma in BASEBALL_CONTEXT or t.text in BASEBALL_CONTEXT
               for j, t in enumerate(tokens) if j != i)


def _resolve_glove(tokens: list[Token], i: int, cls: str) -> str | None:
    # A "glove" is COCO's baseball glove only on a baseball field (ski gloves are not).
    if tokens[i].text.startswith("mitt"):
        return cls
    return cls if _has_baseball_context(tokens, i) else None


def _resolve_batter(tokens: list[Token], i: int, cls: str) -> str | None:
    # In captions a batter is the baseball player, unless something is baked ("cake batter").
    if _has_baseball_context(tokens, i):
        return cls
    return None if any(t.lemma in BAKING_CONTEXT for t in tokens) else cls


def _resolve_glass(tokens: list[Token], i: int, cls: str) -> str | None:
    # "a glass of wine" → wine glass; "a glass of water/milk/juice" → cup (COCO labels
    # drinking glasses "cup"); bare plural "glasses" are eyeglasses; "glass" without a
    # determiner is the material ("made of glass").
    token = tokens[i]
    following = [t.text for t in tokens[i + 1 : i + 5]]
    if following and following[0] == "of":
        return "wine glass" if WINE_WORDS & set(following[1:]) else "cup"
    if token.is_plural:
        return None
    if i + 1 < len(tokens) and tokens[i + 1].tag.startswith("NN"):
        return None  # the material: "a glass door", "glass bowl"
    # A drinking glass is determined, possibly after a noun modifier ("a beer glass").
    noun_modifier_before = i > 0 and tokens[i - 1].tag.startswith("NN")
    if not (_has_determiner_before(tokens, i)
            or (noun_modifier_before and _has_determiner_before(tokens, i - 1))):
        return None
    mentions_wine = any(t.text in WINE_WORDS for t in tokens)
    return "wine glass" if mentions_wine else "cup"


def _resolve_bag(tokens: list[Token], i: int, cls: str) -> str | None:
    if i > 0 and tokens[i - 1].text in NON_HANDBAG_BAG_MODIFIERS:
        return None
    return cls


def _resolve_plant(tokens: list[Token], i: int, cls: str) -> str | None:
    # COCO only labels potted plants; plants that animals eat grow outdoors.
    return None if _words_near(tokens, i, before=4, after=0) & EATING_VERBS else cls


def _resolve_young_animal(tokens: list[Token], i: int, cls: str) -> str | None:
    # "elephant calf", "bear cub", "an elephant and her calf": the young of the animal
    # just named, already counted.
    def is_animal(token: Token) -> bool:
        return WORD_TO_CLASS.get(token.lemma) in ANIMAL_CLASSES

    previous = tokens[i - 1] if i > 0 else None
    if previous is None:
        return cls
    if is_animal(previous):
        return None
    if previous.text in ("her", "its", "their", "his") and any(map(is_animal, tokens[: i - 1])):
        return None
    return cls


_CONTEXT_RULES: dict[str, Callable[[list[Token], int, str], str | None]] = {
    "orange": _resolve_orange,
    **{sport: _resolve_ball_sport for sport in BALL_SPORTS},
    "bat": _resolve_bat,
    "glove": _resolve_glove,
    "batter": _resolve_batter,
    "glass": _resolve_glass,
    "bag": _resolve_bag,
    "plant": _resolve_plant,
    **{young: _resolve_young_animal for young in YOUNG_ANIMAL_HEADS},
}


def _single_word_class(tokens: list[Token], i: int) -> str | None:
    token = tokens[i]
    cls = WORD_TO_CLASS.get(token.text) or WORD_TO_CLASS.get(token.lemma)
    if cls is None or not _looks_like_noun(tokens, i):
        return None
    if _is_compound_modifier(tokens, i) or _is_negated(tokens, i):
        return None
    lemma = token.lemma if token.lemma in WORD_TO_CLASS else token.text
    if cls == PERSON and lemma in KINSHIP_WORDS and i > 0 and tokens[i - 1].text == "its":
        return None
    if lemma in NOT_BEFORE_OF and i + 1 < len(tokens) and tokens[i + 1].text == "of":
        return None
    rule = _CONTEXT_RULES.get(lemma)
    return rule(tokens, i, cls) if rule else cls


def _classes_in_tokens(tokens: list[Token]) -> list[str]:
    found: dict[str, None] = {}  # insertion-ordered set
    i = 0
    while i < len(tokens):
        phrase = _phrase_at(tokens, i)
        if phrase is not None:
            cls, end = phrase
            if cls and not _is_compound_modifier(tokens, end - 1) and not _is_negated(tokens, i):
                found.setdefault(cls)
            i = end
            continue
        cls = _single_word_class(tokens, i)
        if cls:
            found.setdefault(cls)
        i += 1
    return list(found)


def extract_classes(caption: str) -> list[str]:
    """COCO class names mentioned as objects in ``caption``, in order of first appearance.

    >>> extract_classes("A man riding a wave on top of a surfboard.")
    ['person', 'surfboard']
    """
    if not isinstance(caption, str):
        raise TypeError(f"extract_classes expects a caption str, got {type(caption).__name__}")
    text = normalize_caption(caption)
    if not text:
        return []
    return _classes_in_tokens(_tokenize_and_tag(text))
