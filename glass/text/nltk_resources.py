"""Check once per process that the NLTK data used for caption parsing can be found.

Caption → class extraction (GLASS Sec. 3) needs two NLTK data packages: the English
averaged-perceptron POS tagger and WordNet (for the noun lemmatiser). Machines in this
project are often offline, so a missing package must fail loudly with the fix spelled out
instead of with NLTK's generic ``LookupError``.
"""

from __future__ import annotations

import functools

import nltk
from glass.errors import MissingInput

# NLTK downloader package name → the resource path that ``nltk.data.find`` resolves.
REQUIRED_NLTK_RESOURCES: dict[str, str] = {
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng",
    "wordnet": "corpora/wordnet",
}

DOWNLOAD_COMMAND = "python -m nltk.downloader " + " ".join(REQUIRED_NLTK_RESOURCES)


def _is_findable(resource_path: str) -> bool:
    try:
        nltk.data.find(resource_path)
    except LookupError:
        return False
    return True


def _try_download(package: str) -> None:
    # Offline machines make nltk.download print an error and return False, or raise on some
    # network failures; either way the follow-up find() decides, so errors are swallowed here.
    try:
        nltk.download(package, quiet=True)
    except Exception:  # noqa: BLE001 - any download failure just means "still missing"
        pass


def _missing_resources_message(missing: dict[str, str]) -> str:
    listed = ", ".join(f"{path!r} (NLTK package {package!r})" for package, path in missing.items())
    return (
        f"NLTK data missing: {listed}. "
        f"NLTK looked in nltk.data.path = {list(nltk.data.path)!r}, and downloading it failed "
        "(no internet?). Fix it with one of:\n"
        f"  1. on a machine with internet: {DOWNLOAD_COMMAND}\n"
        "  2. set NLTK_DATA to a folder that holds taggers/averaged_perceptron_tagger_eng/ and "
        "corpora/wordnet/ (in this project: NLTK_DATA=../shared/nltk_data, relative to the repo)."
    )


@functools.cache
def ensure_nltk_data() -> None:
    """Make sure the POS tagger and WordNet are findable, downloading each missing one once.

    Raises RuntimeError naming the missing resources, the searched folders and the fix.
    The successful check is cached, so it runs once per process (a failure is not cached:
    functools.cache does not store exceptions, so a later call after fixing NLTK_DATA works).
    """
    missing = {
        package: path
        for package, path in REQUIRED_NLTK_RESOURCES.items()
        if not _is_findable(path)
    }
    for package in missing:
        _try_download(package)
    still_missing = {
        package: path for package, path in missing.items() if not _is_findable(path)
    }
    if still_missing:
        raise MissingInput(_missing_resources_message(still_missing))
