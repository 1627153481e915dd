#!/usr/bin/env python3
"""Training throughput of the PyTorch reference (mnemo_ref.py) on the batches `mnemo bench`
and scripts/perf/bench_train.c time: the same config, the same tokens (same LCG), fp32,
forward + backward + global-norm clip + AdamW, one step at a time.

Which torch: whatever the interpreter that runs this has. scripts/bench runs it with the pyenv
`python3` on PATH (PyPI's current torch, `python3 -m pip install torch`; 2.15.0 when this was
written, MKL + oneDNN inside) and, as a second data point, with Debian's /usr/bin/python3
(python3-torch 1.13.1). The version is printed in the first output line.

Modes
  eager    the reference module exactly as the oracle uses it (explicit masked softmax attention)
  sdpa     the same module with attention through F.scaled_dot_product_attention (the fused
           kernel a PyTorch user would reach for; same maths, same mask)
  compile  torch.compile of the decoder and compressor turns (inductor, C++ codegen on the CPU);
           the compile time is spent in the warm-up steps and not counted

Real turns: with --batches FILE (written by `mnemo_perf batches` from a token shard: B windows
of T turns of real dialogue, each turn padded to max_turn) the steps train on those batches
instead, step i on batch i mod n (warm-up steps likewise), each batch cut to its longest turn
as a PyTorch user would pad it (tokens (T, B, longest), the padded positions masked by
`lengths` as in the reference). torch.compile then runs with its default dynamic-shape policy
(the lengths differ from batch to batch), and the warm-up should cover every batch so that no
compilation is timed.

Output: one line `torch <version> mode <m> ...` then one line per timed step
`step <i> <seconds> <loss>`, then `median_s <s> tokens_per_s <x>`. With --serve: `ready` after
the warm-up, then one step per `step` line read from stdin (scripts/bench alternates it with
mnemo step by step, so that both see the same machine load).
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from batches import read_batches  # noqa: E402
from mnemo_ref import Attention, Config, MnemoRef, clip_grads, make_adamw  # noqa: E402


def lcg_tokens(T, B, L, V):
    """The tokens of train/cmd_bench.c: x = x * 1664525 + 1013904223 (mod 2^32), id = (x >> 8) % V,
    laid out (T, B, L)."""
    x = 12345
    out = []
    for _ in range(T * B * L):
        x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
        out.append((x >> 8) % V)
    return torch.tensor(out, dtype=torch.long).view(T, B, L)


def real_batches(path):
    """The batches of `mnemo_perf batches` as [(tokens (T, B, longest), lengths (T, B))]: each
    batch cut to its longest turn."""
    B, T, L, batches = read_batches(path)
    out = []
    for tokens, lengths in batches:
        lengths = torch.tensor(lengths, dtype=torch.long).view(T, B)
        tokens = torch.tensor(tokens, dtype=torch.long).view(T, B, L)[:, :, :int(lengths.max())]
        out.append((tokens.contiguous(), lengths))
    return out


def sdpa_forward(self, x, allowed):
    """Attention.forward with the fused kernel; `allowed` is the same boolean mask."""
    B, S, C = x.shape
    H = self.n_heads
    hs = C // H
    q, k, v = self.c_attn(x).split(C, dim=2)
    q = q.view(B, S, H, hs).transpose(1, 2)
    k = k.view(B, S, H, hs).transpose(1, 2)
    v = v.view(B, S, H, hs).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, :, :])
    return self.c_proj(y.transpose(1, 2).reshape(B, S, C))


def gpt2_init(model, cfg, seed):
    """docs/model.md's initialisation (values do not change the cost, only keep it realistic)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            elif name == "memory.gate.bias":
                p.fill_(cfg.gate_bias_init)
            elif name.endswith("bias"):
                p.zero_()
            elif name.endswith("wpe"):
                p.normal_(0.0, 0.01, generator=g)
            elif name.endswith("mlp.c_proj.weight") or name.endswith("attn.c_proj.weight"):
                layers = cfg.n_layers if name.startswith("decoder") else cfg.n_comp_layers
                p.normal_(0.0, 0.02 / math.sqrt(2 * layers), generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--comp-layers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--max-turn", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--bptt", type=int, default=8)
    ap.add_argument("--turn-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["eager", "sdpa", "compile"], default="eager")
    ap.add_argument("--batches", help="train on these batches of real turns (mnemo_perf batches)")
    ap.add_argument("--serve", action="store_true", help="after the warm-up, one step per 'step' line on stdin")
    ap.add_argument("--profile", action="store_true",
                    help="after the warm-up, one step under torch.profiler: share of time in matrix products")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Config(vocab_size=args.vocab, d_model=args.width, n_heads=args.heads, n_layers=args.layers,
                 n_comp_layers=args.comp_layers, n_slots=args.slots, max_turn_tokens=args.max_turn,
                 gate_bias_init=-2.0)
    if args.mode == "sdpa":
        Attention.forward = sdpa_forward
    model = MnemoRef(cfg).float()
    gpt2_init(model, cfg, 1)
    if args.mode == "compile":
        # The per-turn functions are where the work is; forward_batch's Python loop over turns
        # and its BPTT bookkeeping stay eager. Full turns: shapes are static; real batches:
        # torch's default (a recompile with dynamic shapes once a length changes).
        dynamic = None if args.batches else False
        if args.batches:
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        model.decode = torch.compile(model.decode, dynamic=dynamic)
        model.update = torch.compile(model.update, dynamic=dynamic)
    opt = make_adamw(model, 3e-4, 0.9, 0.95, 1e-8, 0.1)

    T, B, L = args.turns, args.batch, args.turn_tokens
    if args.batches:
        batches = real_batches(args.batches)
        if tuple(batches[0][1].shape) != (T, B):
            raise SystemExit(f"{args.batches}: batches of {tuple(batches[0][1].shape)} turns x sequences, not {(T, B)}")
    else:
        batches = [(lcg_tokens(T, B, L, cfg.vocab_size), torch.full((T, B), L, dtype=torch.long))]
    print(f"torch {torch.__version__} mode {args.mode} threads {torch.get_num_threads()} "
          f"config V {cfg.vocab_size} C {cfg.d_model} H {cfg.n_heads} layers {cfg.n_layers}+{cfg.n_comp_layers} "
          f"slots {cfg.n_slots}; batch {B} x {T} turns x "
          f"{L if not args.batches else 'real'} tokens, bptt {args.bptt}", flush=True)
    n_steps = [0]

    def step():
        tokens, lengths = batches[n_steps[0] % len(batches)]
        n_steps[0] += 1
        opt.zero_grad(set_to_none=True)
        out = model.forward_batch(tokens, lengths, None, args.bptt)
        out["loss"].backward()
        clip_grads(model, 1.0)
        opt.step()
        return float(out["loss"].detach())

    for _ in range(args.warmup):
        step()
    n_steps[0] = 0  # timed step i trains on batch i mod n, as mnemo_perf's
    if args.profile:
        # where torch's step goes, for docs/perf.md's comparison with mnemo's perf profile: self
        # CPU time of the matrix-product ops against all ops (the other threads work inside them)
        from torch.profiler import ProfilerActivity, profile
        # torch's own product speed on the model's main shapes (rows = batch x (slots + turn)),
        # the counterpart of the sgemm GFLOP/s mnemo_perf prints
        rows = B * (cfg.n_slots + L)
        for M, K, N in ((rows, cfg.d_model, 4 * cfg.d_model), (rows, 4 * cfg.d_model, cfg.d_model),
                        (B * L, cfg.d_model, cfg.vocab_size)):
            a, b = torch.randn(M, K), torch.randn(K, N)
            ts = []
            for _ in range(12):
                t0 = time.perf_counter()
                a @ b
                ts.append(time.perf_counter() - t0)
            print(f"mm {M}x{K}x{N} gflops {2 * M * K * N / statistics.median(ts[2:]) / 1e9:.1f}")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        ev = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ev)
        mm_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")
        mm = sum(e.self_cpu_time_total for e in ev if e.key in mm_ops)
        print(f"profile self_cpu_s {total / 1e6:.3f} matmul_s {mm / 1e6:.3f} matmul_share {mm / total:.3f}")
        print(ev.table(sort_by="self_cpu_time_total", row_limit=12))
        return
    if args.serve:
        # paired mode for scripts/bench: one step per "step" line on stdin
        print("ready", flush=True)
        i = 0
        for line in sys.stdin:
            if not line.startswith("step"):
                break
            t0 = time.perf_counter()
            loss = step()
            print(f"step {i} {time.perf_counter() - t0:.4f} {loss:.6f}", flush=True)
            i += 1
        return
    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        times.append(dt)
        print(f"step {i} {dt:.4f} {loss:.6f}", flush=True)
    med = statistics.median(times)
    real = sum(int(batches[i % len(batches)][1].sum()) for i in range(args.steps))
    print(f"median_s {med:.4f} tokens_per_s {real / sum(times):.1f}", flush=True)


if __name__ == "__main__":
    main()
