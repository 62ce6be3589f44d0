"""DVC stage ``prompts``: captions → "<caption>; <class> <class> …" prompts (glass.text.prompts)."""

import argparse

from glass.io import read_jsonl, write_json, write_jsonl
from glass.params import load_params, read_section
from glass.stage_runner import run_stage
from glass.text.classes import extract_classes
from glass.text.nltk_resources import ensure_nltk_data
from glass.text.params import PromptsParams
from glass.text.prompts import build_prompt_records, prompt_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--captions", required=True, help="captions JSONL from the caption stage")
    parser.add_argument("--out", required=True, help="prompts JSONL to write")
    parser.add_argument("--stats", required=True, help="prompt statistics JSON (DVC metrics)")
    parser.add_argument("--class-counts", required=True, help="per-class prompt counts JSON")
    args = parser.parse_args()
    settings = read_section(load_params(args.params), "prompts", PromptsParams)
    ensure_nltk_data()
    records = build_prompt_records(read_jsonl(args.captions), extract_classes,
                                   settings.max_caption_chars)
    metrics, class_counts = prompt_statistics(records)
    write_jsonl(args.out, records)
    write_json(args.class_counts, class_counts)
    write_json(args.stats, metrics)


if __name__ == "__main__":
    run_stage("prompts", main)
