"""Hugging Face interop with the tiny GPT-2 fixture (tests/fixtures/gpt2_tiny): transformers'
GPT2LMHeadModel fed mnemo's state as the inputs_embeds prefix gives mnemo's logits, and the
exported folder loads with from_pretrained and imports back bit for bit."""
import os

import numpy as np
import pytest
import torch
import transformers

import mnemo
from conftest import CHAT_CKPT, GPT2_DIR, SLOTS

TEXTS = ["A: Hi! I just moved to Lisbon last week.\n", "B: My sister lives there too; 42 square metres."]


def close_to_hf(mine, hf):
    """docs/gpt2.md's tolerance: |mnemo - HF| <= 1e-4 |HF| + 1e-5 max|HF| per logit."""
    bound = 1e-4 * np.abs(hf) + 1e-5 * np.abs(hf).max()
    worst = float((np.abs(mine - hf) / bound).max())
    assert worst <= 1.0, f"worst logit at {worst:.3g} of the tolerance"


@pytest.fixture(scope="module")
def exported(gpt2_ckpt, tmp_path_factory):
    return mnemo.hf.export(gpt2_ckpt, tmp_path_factory.mktemp("hf") / "out")


def hf_model(folder):
    m = transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float64)
    return m.eval()


@pytest.mark.parametrize("folder", ["fixture", "exported"])
def test_prefix_embeds_give_mnemos_logits(gpt2, exported, folder):
    model, tok = gpt2
    hf = hf_model(GPT2_DIR if folder == "fixture" else exported)
    state = model.update(model.initial_state(), tok.encode(TEXTS[0]))
    state = model.update(state, tok.encode(TEXTS[1]))
    ids = tok.encode("B: what city was it?")
    prefix = mnemo.hf.prefix_embeds(model, state)
    assert prefix.shape == (SLOTS, 32) and np.shares_memory(prefix, state)   # R itself, no copy
    with torch.no_grad():
        embeds = torch.cat([torch.from_numpy(prefix).double(), hf.transformer.wte(torch.from_numpy(ids).long())])
        logits = hf(inputs_embeds=embeds[None]).logits[0, SLOTS:].numpy()
        # the same through mnemo.hf.inputs_embeds (mnemo's own wte rows)
        whole = torch.from_numpy(mnemo.hf.inputs_embeds(model, state, ids)).double()
        again = hf(inputs_embeds=whole[None]).logits[0, SLOTS:].numpy()
    mine = model.logits(state, ids)
    close_to_hf(mine, logits)
    close_to_hf(mine, again)
    # and without memory: plain GPT-2 on input_ids
    with torch.no_grad():
        plain = hf(input_ids=torch.from_numpy(ids).long()[None]).logits[0].numpy()
    close_to_hf(model.logits(None, ids), plain)
    # the prefix matters: R_0 gives other logits
    assert not np.allclose(model.logits(model.initial_state(), ids), mine, rtol=1e-3)


def test_export_loads_with_from_pretrained(gpt2, exported):
    model, tok = gpt2
    names = sorted(os.listdir(exported))
    assert names == ["config.json", "merges.txt", "model.safetensors", "tokenizer_config.json", "vocab.json"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(exported)
    for text in TEXTS + ["Café résumé 日本語 😀", "   spaces  and\ttabs\n\n"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text).tolist()
    hf = hf_model(exported)
    assert hf.config.n_positions == SLOTS + 60 and hf.config.n_head == 4
    params = model.parameters()
    sd = hf.state_dict()
    np.testing.assert_array_equal(sd["transformer.wte.weight"].float().numpy(), params["wte"])
    np.testing.assert_array_equal(sd["transformer.h.1.mlp.c_fc.weight"].float().numpy(),
                                  params["decoder.h.1.mlp.c_fc.weight"])
    assert torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"])   # tied


def test_export_then_import_is_bit_for_bit(gpt2, gpt2_ckpt, exported, tmp_path):
    back_path = mnemo.hf.import_gpt2(exported, tmp_path / "back.h5", slots=SLOTS, max_turn_tokens=60,
                                     comp_layers=2, seed=1)
    back, back_tok = mnemo.load(back_path)
    mine = gpt2[0].parameters()
    theirs = back.parameters()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert mine[name].tobytes() == theirs[name].tobytes(), name
    assert back.fingerprint == gpt2[0].fingerprint
    for name in ["vocab.json", "merges.txt"]:   # the tokenizer files are GPT-2's own, byte for byte
        with open(os.path.join(exported, name), "rb") as a, open(os.path.join(GPT2_DIR, name), "rb") as b:
            assert a.read() == b.read(), name


def test_export_refusals(tmp_path):
    with pytest.raises(mnemo.Error, match="mnemo-bpe"):      # mnemo's own tokenizer is not GPT-2's
        mnemo.hf.export(CHAT_CKPT, tmp_path / "x")
    with pytest.raises(mnemo.Error) as e:
        mnemo.hf.export(tmp_path / "missing.h5", tmp_path / "y")
    assert e.value.status == "MN_ERR_IO" and "missing.h5" in str(e.value)
    with pytest.raises(mnemo.Error, match="cannot open: No such file"):   # a folder without GPT-2
        mnemo.hf.import_gpt2(tmp_path, tmp_path / "z.h5")
