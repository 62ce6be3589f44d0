"""How distinct the text encoder keeps the toy world's class words.

    python experiments/class_embedding_similarity.py [--model FOLDER ...]

The synthesize stage reads each class's cross-attention map with keys from the class text
encoded alone (Dataset Diffusion's lookup, glass/synth/class_tokens.py). For each Stable
Diffusion folder (default: the committed tiny SD, models/toy/stable_diffusion), every toy class is
encoded alone; its token states (last hidden state, averaged over the class's tokens) are
compared by cosine similarity with every other class's. A text encoder whose class words all look
alike gives the UNet's cross-attention nothing to tell them apart by, in their keys and in the
values that paint them. To compare an earlier model, extract it from git, e.g.
``git archive cbab6e8 models/toy/stable_diffusion | tar -x -C /tmp/sd-cbab6e8``, and name it:
``--model committed=models/toy/stable_diffusion cbab6e8=/tmp/sd-cbab6e8/models/toy/stable_diffusion``.
Writes reports/class_embedding_similarity.json.
"""

import argparse
import itertools

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from glass.data.toy_world import DEFAULT_TOY_CLASSES
from glass.io import write_json
from glass.stage_runner import run_stage
from glass.synth.class_tokens import class_token_groups


@torch.no_grad()
def class_similarities(folder: str) -> dict:
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval()
    states = []
    for name in DEFAULT_TOY_CLASSES:
        ids = tokenizer(name, padding="max_length", max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        hidden = text_encoder(ids).last_hidden_state[0]
        states.append(hidden[class_token_groups(tokenizer, [name])[0]].mean(0))
    unit = torch.nn.functional.normalize(torch.stack(states), dim=1)
    cosine = (unit @ unit.T).tolist()
    pairs = {f"{a} / {b}": round(cosine[i][j], 4)
             for (i, a), (j, b) in itertools.combinations(enumerate(DEFAULT_TOY_CLASSES), 2)}
    return {"mean_cosine": round(sum(pairs.values()) / len(pairs), 4),
            "max_pair": max(pairs, key=pairs.get), "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["models/toy/stable_diffusion"],
                        help="FOLDER or NAME=FOLDER (the report's key)")
    parser.add_argument("--report", default="reports/class_embedding_similarity.json")
    args = parser.parse_args()
    entries = [entry.partition("=") for entry in args.model]
    report = {name: class_similarities(folder or name)
              for name, _, folder in entries}
    for name, row in report.items():
        print(name, "mean cosine", row["mean_cosine"], "closest", row["max_pair"],
              row["pairs"][row["max_pair"]])
    write_json(args.report, report)


if __name__ == "__main__":
    run_stage("class_embedding_similarity", main)
