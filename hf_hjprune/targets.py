"""Frame targets for HuBERT-style masked prediction: features, and the k-means codebook that labels them.

Iteration 1 clusters MFCCs (13 coefficients with deltas and double deltas, from `librosa`), iteration 2 a
hidden layer of an iteration-1 model, as in HuBERT. The MFCC frames use the conv stack's window and hop
(25 ms / 20 ms for wav2vec2-shaped models), so there is one target per encoder frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import HJPruneInputError
from .structure import SAMPLING_RATE

MFCC_WINDOW = 400
"""Samples per MFCC frame: the receptive field of the wav2vec2 conv stack (25 ms)."""
MFCC_HOP = 320
"""Samples between MFCC frames: the conv stack's total stride (20 ms)."""


class TargetError(HJPruneInputError):
    """Frame targets cannot be made from the given audio or settings."""


def mfcc_features(audio: np.ndarray) -> np.ndarray:
    """MFCCs with deltas and double deltas, `(frames, 39)`, one frame per `MFCC_HOP` samples."""
    import librosa

    if len(audio) < MFCC_WINDOW:
        raise TargetError(f"{len(audio)} samples is shorter than one MFCC frame ({MFCC_WINDOW} samples)")
    mfcc = librosa.feature.mfcc(
        y=np.asarray(audio, dtype=np.float32),
        sr=SAMPLING_RATE,
        n_mfcc=13,
        n_fft=MFCC_WINDOW,
        hop_length=MFCC_HOP,
        win_length=MFCC_WINDOW,
        center=False,
        n_mels=40,
    )
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # odd, at most the number of frames
    if width < 3:
        return np.concatenate([mfcc, np.zeros_like(mfcc), np.zeros_like(mfcc)]).T
    delta = librosa.feature.delta(mfcc, width=width, order=1, mode="nearest")
    delta2 = librosa.feature.delta(mfcc, width=width, order=2, mode="nearest")
    return np.concatenate([mfcc, delta, delta2]).T.astype(np.float32)


@torch.no_grad()
def layer_features(encoder: nn.Module, input_values: torch.Tensor, layer: int) -> torch.Tensor:
    """Hidden states of `encoder` (a base model) after `layer` Transformer layers, `(batch, frames, hidden)`."""
    was_training = encoder.training
    encoder.eval()
    hidden = encoder(input_values, output_hidden_states=True).hidden_states
    encoder.train(was_training)
    if not 0 <= layer < len(hidden):
        raise TargetError(
            f"target_layer {layer} is out of range: the model has hidden states 0..{len(hidden) - 1}"
        )
    return hidden[layer]


@dataclass
class Codebook:
    """Standardisation statistics and k-means centroids of frame features."""

    mean: np.ndarray
    std: np.ndarray
    centroids: np.ndarray

    @property
    def num_clusters(self) -> int:
        return len(self.centroids)

    @classmethod
    def fit(
        cls, features: np.ndarray, num_clusters: int, seed: int = 0, max_frames: int = 200_000
    ) -> Codebook:
        """k-means (scikit-learn's `MiniBatchKMeans`, as the HuBERT recipes) on standardised frames.

        Raises:
            TargetError: Fewer frames than clusters, or fewer than 2 clusters.
        """
        from sklearn.cluster import MiniBatchKMeans

        if num_clusters < 2:
            raise TargetError(f"num_clusters must be at least 2, got {num_clusters}")
        if len(features) < num_clusters:
            raise TargetError(
                f"{len(features)} feature frames cannot make {num_clusters} clusters: use more audio "
                "(kmeans_utterances) or fewer clusters (num_clusters)"
            )
        rng = np.random.default_rng(seed)
        if len(features) > max_frames:
            features = features[rng.choice(len(features), max_frames, replace=False)]
        mean, std = features.mean(0), features.std(0) + 1e-5
        kmeans = MiniBatchKMeans(
            n_clusters=num_clusters, batch_size=10_000, n_init=3, max_iter=100, random_state=seed
        ).fit((features - mean) / std)
        return cls(
            mean.astype(np.float32), std.astype(np.float32), kmeans.cluster_centers_.astype(np.float32)
        )

    def assign(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The nearest centroid of each frame (`(..., dim)` -> `(...)` int64)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        standardised = (features - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)
        flat = standardised.reshape(-1, standardised.shape[-1])
        return torch.cdist(flat, torch.from_numpy(self.centroids)).argmin(-1).reshape(features.shape[:-1])

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, mean=self.mean, std=self.std, centroids=self.centroids)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Codebook:
        with np.load(Path(path)) as data:
            return cls(data["mean"], data["std"], data["centroids"])
