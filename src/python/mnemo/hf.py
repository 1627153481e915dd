"""Hugging Face interop (docs/gpt2.md, docs/python.md).

mnemo's decoder is exactly Hugging Face GPT-2 run on ``inputs_embeds = concat(R, wte[tokens])``
with positions 0..k-1 for the k memory slots and k.. for the tokens (docs/model.md). So for a
checkpoint whose decoder came from `mnemo import-gpt2` (or was exported with ``export``):

    import torch, transformers, mnemo
    model, tok = mnemo.load("base.h5")
    gpt2 = transformers.GPT2LMHeadModel.from_pretrained("hf_dir")   # mnemo.hf.export("base.h5", "hf_dir")
    state = model.update(model.initial_state(), tok.encode("A: my cat is Miso\\n"))
    ids = tok.encode("B: what is")
    prefix = torch.from_numpy(mnemo.hf.prefix_embeds(model, state))             # (k, C)
    embeds = torch.cat([prefix, gpt2.transformer.wte(torch.from_numpy(ids).long())])
    logits = gpt2(inputs_embeds=embeds[None]).logits[0, model.n_slots:]        # == model.logits(state, ids)

Nothing here needs torch or transformers; the tests use both.
"""
from __future__ import annotations

import os

import numpy as np

from . import Model, PathLike, _tokens
from ._lib import check, lib, path_arg

__all__ = ["prefix_embeds", "inputs_embeds", "export", "import_gpt2"]


def prefix_embeds(model: Model, state: np.ndarray) -> np.ndarray:
    """The ``inputs_embeds`` prefix that makes a transformers GPT-2 read ``state``: a (k, C)
    float32 array for positions 0..k-1, to be followed by the token embeddings (positions
    k..). It is R itself (docs/model.md), checked against the model and not copied."""
    return model._check_state(state)


def inputs_embeds(model: Model, state: np.ndarray, tokens) -> np.ndarray:
    """The whole ``inputs_embeds`` (k + n, C) of a turn: ``prefix_embeds`` then the rows of
    the model's own token embedding (wte) for the tokens."""
    t = _tokens(tokens)
    wte = model.parameters()["wte"]
    if t.size and (t.min() < 0 or t.max() >= wte.shape[0]):
        from . import Error
        raise Error(f"a token id is outside 0..{wte.shape[0] - 1}")
    return np.concatenate([prefix_embeds(model, state), wte[t]])


def export(checkpoint: PathLike, out_dir: PathLike) -> str:
    """`mnemo export-hf`: writes the checkpoint's decoder and GPT-2 tokenizer as a folder that
    ``GPT2LMHeadModel.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load
    (config.json, model.safetensors, vocab.json, merges.txt, tokenizer_config.json).
    Returns out_dir."""
    check(lib.mn_export_hf(path_arg(checkpoint), path_arg(out_dir)))
    return os.fspath(out_dir)


def import_gpt2(hf_dir: PathLike, checkpoint: PathLike, slots: int = 16, max_turn_tokens: int = 128,
                comp_layers: int = 2, seed: int = 1) -> str:
    """`mnemo import-gpt2`: a Hugging Face GPT-2 folder (model.safetensors, vocab.json,
    merges.txt, and config.json when present) as the decoder of a new checkpoint, with a
    compressor and memory initialised from ``seed``. Returns the checkpoint's path."""
    d = os.fspath(hf_dir)
    config = os.path.join(d, "config.json")
    check(lib.mn_import_gpt2(path_arg(os.path.join(d, "model.safetensors")), path_arg(os.path.join(d, "vocab.json")),
                             path_arg(os.path.join(d, "merges.txt")),
                             path_arg(config) if os.path.exists(config) else None, int(slots), int(max_turn_tokens),
                             int(comp_layers), int(seed), path_arg(checkpoint)))
    return os.fspath(checkpoint)
