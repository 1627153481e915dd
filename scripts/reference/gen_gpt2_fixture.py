#!/usr/bin/python3
"""Oracle fixture for `mnemo import-gpt2` (tests/fixtures/gpt2_tiny/).

Interpreter: Debian's /usr/bin/python3 (3.11) with Debian's torch 1.13 (python3-torch), plus
from PyPI, for that interpreter:
    /usr/bin/python3 -m pip install --user --break-system-packages transformers==4.40.2 "safetensors<0.5"
(tokenizers 0.19 comes with transformers 4.40, the last line that supports torch 1.13.)
Run from the repository root:
    /usr/bin/python3 scripts/reference/gen_gpt2_fixture.py

What it writes (all small):
- vocab.json, merges.txt: a byte-level BPE (GPT-2 format) trained with HF `tokenizers` on the
  varied text below, so that the fixture stays small while the merges are real.
- model.safetensors + config.json: `GPT2LMHeadModel.save_pretrained` of a random tiny
  GPT2Config (2 layers, n_embd 32, 4 heads, 64 positions), F32, names with the
  "transformer." prefix and the tied lm_head left out, as transformers writes them.
- model_f16.safetensors: the same weights in F16, without the prefix and with the
  h.{l}.attn.bias causal-mask buffers, laid out like the original GPT-2 files on the Hub.
- model_bf16.safetensors: BF16, with the prefix and an explicit (tied) lm_head.weight.
- reference.h5: a greedy continuation (argmax, no memory) of a prompt; and per text, the token ids of HF GPT2TokenizerFast (checked equal to the slow
  pure-Python GPT2Tokenizer); logits of HF GPT-2 on input_ids (no memory), computed in float64
  from the stored weights, for each dtype variant; and the memory path: for a random R
  (k x n_embd), HF GPT-2 on inputs_embeds = concat(R, wte[ids]) with its logits at the token
  positions, which is mnemo's decoder reading R as k memory slots (docs/model.md).
The weights are drawn wider than GPT-2's init (biases and LayerNorm perturbed too) so that
every parameter visibly moves the logits.
"""
import copy
import json
import os
import sys

import h5py
import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer, GPT2TokenizerFast

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "gpt2_tiny")
N_LAYER, N_EMBD, N_HEAD, N_POS = 2, 32, 4, 64
SLOTS = 4          # k of the memory-path cases; k + tokens <= N_POS
VOCAB = 420

CORPUS = [
    "A: Hi! I just moved to Lisbon last week.\nB: Oh nice, how do you like it so far?",
    "A: The tram up the hill is lovely, but my flat is tiny: 32 square metres.",
    "B: My sister lives there too; she works at the aquarium near the river.",
    "The quick brown fox jumps over the lazy dog. The dog does not mind at all.",
    "Numbers: 0 1 2 3 42 365 1,000,000 3.14159 2023-11-25 12:30pm #7 $19.99 50%",
    "Café résumé naïve façade jalapeño straße Ærø; Ελληνικά κείμενο; Кириллица текст.",
    "日本語のテキストと中文文本，还有한국어 텍스트。 Emoji: 😀🎉👍🏽 ❤️",
    "I'm sure you'll like it; they've said it's what we'd want. We're ready. DON'T SHOUT!",
    "   indented line\n\ttabbed line\n\n\nthree blank lines above   and trailing spaces   ",
    "email me at someone@example.com or visit https://example.org/path?q=1&r=2 (soon).",
    "What is your favourite book? Mine is 'The Name of the Rose', I read it twice.",
    "Remember: the meeting moved from Tuesday to Thursday at 9, room B-204.",
] * 4

TEXTS = [
    "A: Hi! I just moved to Lisbon.\nB: How do you like it?",
    "Numbers 42 and 3.14, dates 2023-11-25; café naïve Ελληνικά 😀",
    "   spaces\tand\ttabs\n\nnew lines, DON'T SHOUT, they've said it's fine.",
    "The meeting moved to Thursday at 9, room B-204. Remember it!",
    "unseen words: zyxwvut qqq Kafka-esque 日本 ✓✓",
]
LOGIT_TEXTS = [0, 1, 2, 3]  # texts whose logits are recorded (the rest: token ids only)
MEMORY_TEXTS = [0, 3]       # texts also run through the memory path
F16_TEXTS = [1]             # the first DTYPE_ROWS tokens of these, for the F16 / BF16 files
BF16_TEXTS = [2]
DTYPE_ROWS = 16
GREEDY_PROMPT, GREEDY_NEW = 8, 12


def train_tokenizer():
    tok = ByteLevelBPETokenizer(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, vocab_size=VOCAB, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok.save_model(OUT)
    fast = GPT2TokenizerFast(vocab_file=os.path.join(OUT, "vocab.json"), merges_file=os.path.join(OUT, "merges.txt"))
    slow = GPT2Tokenizer(vocab_file=os.path.join(OUT, "vocab.json"), merges_file=os.path.join(OUT, "merges.txt"))
    ids = []
    for t in TEXTS + CORPUS[:12]:
        a, b = fast.encode(t), slow.encode(t)
        assert a == b, (t, a, b)
        ids.append(a)
    return len(fast), ids


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "wte" in name or "wpe" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def logits64(model64, ids):
    with torch.no_grad():
        return model64(input_ids=torch.tensor([ids])).logits[0].numpy()


def memory_logits64(model64, ids, r):
    with torch.no_grad():
        emb = model64.transformer.wte(torch.tensor([ids]))
        x = torch.cat([torch.from_numpy(r)[None].double(), emb], dim=1)
        return model64(inputs_embeds=x).logits[0, SLOTS:].numpy()


def model_from(state, config):
    """A float64 model holding exactly the given (possibly rounded) weights."""
    m = GPT2LMHeadModel(config)
    m.load_state_dict({k: v.double() for k, v in state.items()}, strict=False)
    m.tie_weights()
    return m.double().eval()


def main():
    os.makedirs(OUT, exist_ok=True)
    vocab, ids = train_tokenizer()
    config = GPT2Config(vocab_size=vocab, n_positions=N_POS, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    gen = torch.Generator().manual_seed(8)
    model = GPT2LMHeadModel(config)
    perturb(model, gen)
    model.eval()
    model.save_pretrained(OUT, safe_serialization=True)
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(OUT, extra)):
            os.remove(os.path.join(OUT, extra))

    # the exact fp32 values that were saved, as the reference's weights
    state32 = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(".attn.bias")
               and not k.endswith(".attn.masked_bias")}
    plain = {k[len("transformer."):]: v for k, v in state32.items() if k.startswith("transformer.")}

    f16 = {k: v.half().contiguous() for k, v in plain.items()}
    for l in range(N_LAYER):  # the causal-mask buffers of the original GPT-2 files
        f16[f"h.{l}.attn.bias"] = torch.tril(torch.ones(N_POS, N_POS)).view(1, 1, N_POS, N_POS).contiguous()
    save_file(f16, os.path.join(OUT, "model_f16.safetensors"), metadata={"format": "pt"})
    bf16 = {"transformer." + k: v.bfloat16().contiguous() for k, v in plain.items()}
    bf16["lm_head.weight"] = plain["wte.weight"].bfloat16().contiguous()
    save_file(bf16, os.path.join(OUT, "model_bf16.safetensors"), metadata={"format": "pt"})

    m32 = model_from(state32, config)
    m16 = model_from({"transformer." + k: v.half().float() for k, v in plain.items()}, config)
    mbf = model_from({"transformer." + k: v.bfloat16().float() for k, v in plain.items()}, config)
    rng = np.random.default_rng(3)
    packed = {"compression": "gzip", "compression_opts": 9, "shuffle": True}

    with h5py.File(os.path.join(OUT, "reference.h5"), "w") as f:
        f.attrs["n_texts"] = len(TEXTS)
        f.attrs["n_token_cases"] = len(ids)
        f.attrs["vocab_size"] = vocab
        f.attrs["n_layer"], f.attrs["n_embd"], f.attrs["n_head"], f.attrs["n_positions"] = N_LAYER, N_EMBD, N_HEAD, N_POS
        f.attrs["slots"] = SLOTS
        texts = TEXTS + CORPUS[:12]
        for i, (t, tid) in enumerate(zip(texts, ids)):
            g = f.create_group(f"case{i}")
            g.attrs["text"] = t
            g.create_dataset("ids", data=np.array(tid, dtype=np.int32))
            if i not in LOGIT_TEXTS:
                continue
            assert SLOTS + len(tid) <= N_POS, (t, len(tid))
            g.create_dataset("logits", data=logits64(m32, tid).astype(np.float32), **packed)
            if i in MEMORY_TEXTS:
                r = (0.5 * rng.standard_normal((SLOTS, N_EMBD))).astype(np.float32)
                g.create_dataset("memory", data=r)
                g.create_dataset("memory_logits", data=memory_logits64(m32, tid, r.astype(np.float64)).astype(np.float32),
                                 **packed)
            if i in F16_TEXTS:
                g.create_dataset("logits_f16", data=logits64(m16, tid[:DTYPE_ROWS]).astype(np.float32), **packed)
            if i in BF16_TEXTS:
                g.create_dataset("logits_bf16", data=logits64(mbf, tid[:DTYPE_ROWS]).astype(np.float32), **packed)
        # greedy decoding without memory: argmax each step (lowest id on ties, as numpy's
        # argmax), kept only where the top two logits are well apart so fp32 agrees
        seq = list(ids[0][:GREEDY_PROMPT])
        for _ in range(GREEDY_NEW):
            last = logits64(m32, seq)[-1]
            top2 = np.sort(last)[-2:]
            assert top2[1] - top2[0] > 1e-3, "greedy step too close to call in fp32"
            seq.append(int(np.argmax(last)))
        g = f.create_group("greedy")
        g.create_dataset("prompt", data=np.array(seq[:GREEDY_PROMPT], dtype=np.int32))
        g.create_dataset("tokens", data=np.array(seq, dtype=np.int32))
    print(f"wrote {OUT}: vocab {vocab}, {len(TEXTS)} logits cases, token ids of {len(ids)} texts")


if __name__ == "__main__":
    sys.exit(main())
