"""Why the SSL start model fine-tunes slowly: how much its targets and layers know about characters.

    python -m hf_hjprune.benchmarks.ssl_diagnostics [--utterances 150]

HuBERT learns to predict k-means clusters of its input; how well those clusters line up with the units
of speech ("cluster purity", HuBERT paper §IV) bounds what iteration 1 can teach. Here the unit is the
character: frames of the broad corpus's English validation utterances are labelled by the shipped
supervised start (`pretrained:tiny-hubert-asr`), with the character of each frame whose CTC argmax is a
letter (CTC's peaks: a rough alignment, the same for every representation below). For each
representation, k-means with the pretraining recipe's number of clusters is fitted on every frame of
those utterances, and reported are the purity (share of labelled frames whose character is the most
common one of their cluster) and the normalised mutual information (NMI) between cluster and character:

- the MFCC features HuBERT iteration 1 was trained to predict;
- layers of the SSL start (`pretrained:tiny-hubert-ssl`), of the same model with fresh weights, and of
  the supervised start (an upper reference: it was trained on these characters).

Writes `results/ssl_diagnostics.{json,md}` next to this file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..reporting import markdown_table, percent, results_page
from .paper_comparison import RESULTS_DIR

COMMAND = "python -m hf_hjprune.benchmarks.ssl_diagnostics"
LABELLER = "pretrained:tiny-hubert-asr"
SSL_MODEL = "pretrained:tiny-hubert-ssl"
SSL_RECIPE = "tiny_hubert_iter1"


def character_labels(utterances: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per frame, the index of the character the CTC model peaks on, or -1 (blank, word delimiter)."""
    from transformers import AutoModelForCTC, AutoProcessor

    from ..start_models import resolve_model

    path = resolve_model(LABELLER)
    model, tokenizer = (
        AutoModelForCTC.from_pretrained(path).eval(),
        AutoProcessor.from_pretrained(path).tokenizer,
    )
    letters = {index for token, index in tokenizer.get_vocab().items() if len(token) == 1 and token.isalpha()}
    labels = []
    with torch.no_grad():
        for audio in utterances:
            best = model(torch.from_numpy(audio)[None]).logits[0].argmax(-1).numpy()
            labels.append(np.where(np.isin(best, list(letters)), best, -1))
    return labels


def encoder_features(
    model_name: str, layer: int, random_init: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """Hidden states after `layer` Transformer layers of a start model (or its shape, freshly initialised)."""
    from transformers import AutoConfig, AutoModel

    from ..start_models import resolve_model
    from ..targets import layer_features

    path = resolve_model(model_name)
    if random_init:
        torch.manual_seed(0)
        encoder = AutoModel.from_config(AutoConfig.from_pretrained(path))
    else:
        encoder = AutoModel.from_pretrained(path)

    def features(audio: np.ndarray) -> np.ndarray:
        return layer_features(encoder, torch.from_numpy(audio)[None], layer)[0].numpy()

    return features


def cluster_scores(
    features: Sequence[np.ndarray], labels: Sequence[np.ndarray], clusters: int
) -> dict[str, float]:
    """Purity and NMI of k-means clusters of every frame against the labelled frames' characters."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import normalized_mutual_info_score

    pairs = [(f[: len(lab)], lab[: len(f)]) for f, lab in zip(features, labels)]
    stacked = np.concatenate([f for f, _ in pairs]).astype(np.float32)
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-5)
    kmeans = MiniBatchKMeans(n_clusters=clusters, random_state=0, n_init=3, batch_size=4096).fit(stacked)
    assigned = kmeans.labels_
    characters = np.concatenate([lab for _, lab in pairs])
    keep = characters >= 0
    assigned, characters = assigned[keep], characters[keep]
    majority = sum(Counter(characters[assigned == c]).most_common(1)[0][1] for c in np.unique(assigned))
    return {
        "purity": majority / len(characters),
        "nmi": float(normalized_mutual_info_score(characters, assigned)),
        "labelled_frames": int(len(characters)),
    }


def run_diagnostics(num_utterances: int = 150) -> dict[str, Any]:
    from ..data.broad_speech import load_broad_speech
    from ..pretrain import load_pretrain_recipe
    from ..targets import mfcc_features

    recipe = load_pretrain_recipe(SSL_RECIPE)
    corpus = load_broad_speech(**recipe.data_options)
    english = [i for i, row in enumerate(corpus.validation.rows) if row["language"] == "en"][:num_utterances]
    utterances = [corpus.validation.audio(i) for i in english]
    labels = character_labels(utterances)
    layers = recipe.model_config["num_hidden_layers"]
    representations = {
        "MFCC (iteration 1's targets)": mfcc_features,
        **{f"SSL start, layer {k}": encoder_features(SSL_MODEL, k) for k in (layers // 2, layers)},
        **{
            f"fresh weights, layer {k}": encoder_features(SSL_MODEL, k, random_init=True)
            for k in (layers // 2,)
        },
        **{f"supervised start, layer {k}": encoder_features(LABELLER, k) for k in (layers // 2,)},
    }
    rows = []
    for name, features_of in representations.items():
        scores = cluster_scores([features_of(audio) for audio in utterances], labels, recipe.num_clusters)
        rows.append({"representation": name, **scores})
    chance = Counter(np.concatenate(labels)[np.concatenate(labels) >= 0].tolist()).most_common(1)[0][1]
    return {
        "utterances": len(utterances),
        "clusters": recipe.num_clusters,
        "majority_character_share": chance / rows[0]["labelled_frames"],
        "rows": rows,
    }


def results_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"k-means with {result['clusters']} clusters on {result['utterances']} English validation utterances "
        f"of the broad corpus; purity if every frame were given the most common character: "
        f"{percent(result['majority_character_share'], decimals=1)}.",
        "",
        *markdown_table(
            ["representation", "purity", "NMI with characters"],
            [
                [row["representation"], percent(row["purity"], decimals=1), f"{row['nmi']:.3f}"]
                for row in result["rows"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=150, help="English validation utterances used")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    result = run_diagnostics(args.utterances)
    result["command"] = " ".join([COMMAND, *(argv if argv is not None else sys.argv[1:])])
    stem = args.output_dir / "ssl_diagnostics"
    atomic_write_json(stem.with_suffix(".json"), result)
    title = "What the SSL start model knows about characters"
    atomic_write_text(
        stem.with_suffix(".md"), results_page(title, result["command"], results_markdown(result))
    )
    print(results_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
