#!/usr/bin/python3
"""Writes tests/fixtures/tiny_model.h5: the truth the C implementation is tested against.

With --write-rule slot|delta, the same checks and file for a model with that write rule
(docs/model.md, "Write rules"): tests/fixtures/tiny_model_<rule>.h5, whose root attribute
write_rule names it (the gate's file has none, as before the rules existed).

Uses scripts/reference/mnemo_ref.py (the PyTorch reference of docs/model.md). Everything is
computed in float64 from float32-representable inputs (parameters, weights and optimizer
hyper-parameters are rounded to float32 first) and stored as float32, so a correct C fp32 run
differs from the fixture only by fp32 rounding.

Runs with Debian's PyTorch (/usr/bin/python3: python3-torch 1.13.1, which reports itself as
1.13.0a0; h5py 3.7, numpy 1.24), and equally after `pip install torch h5py numpy`:
    /usr/bin/python3 scripts/reference/gen_fixture.py [--out PATH]
Deterministic: fixed torch seed, CPU only. Layout: scripts/reference/README.md.
"""
import argparse
import dataclasses
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnemo_ref import (Config, MnemoRef, check_adamw, check_against_naive,  # noqa: E402
                       clip_grads, make_adamw)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20240611

CFG = Config(vocab_size=53, d_model=16, n_heads=2, n_layers=2, n_comp_layers=2, n_slots=3,
             max_turn_tokens=8, gate_bias_init=-1.0)
T, B, MAX_LEN, BPTT = 3, 2, 7, 2
LENGTHS = [[7, 4], [3, 6], [5, 2]]
RECONSTRUCT_WEIGHT = 0.5  # the reconstruction aid's gradients (mn_trainer_set_reconstruction)
RECONSTRUCT_DELAY = 1     # ... delayed (mn_trainer_set_reconstruction_delay): full BPTT, so two turns
ADAMW = dict(lr=0.01, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=3)


def f32(x):
    """The float64 value of x rounded to float32: what the C side actually sees."""
    return float(np.float32(x))


def init_params(model, gen):
    """Large random values (not the GPT-2 init) so every path is exercised and visible."""
    def normal(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "memory.gate.bias":
                v = normal(p.shape, 0.1, CFG.gate_bias_init)
            elif name == "memory.write.bias":  # address logits, then the strength
                v = normal(p.shape, 0.3)
                v[-1] += CFG.gate_bias_init
            elif name == "memory.write.diag":
                v = normal(p.shape, 0.5, 2.0)
            elif name == "memory.r0":
                v = normal(p.shape, 0.5)
            elif name.endswith(".wpe"):
                v = normal(p.shape, 0.1)
            elif ".ln_" in name and name.endswith(".weight"):
                v = normal(p.shape, 0.1, 1.0)
            elif name.endswith(".bias"):  # linear and LayerNorm biases alike
                v = normal(p.shape, 0.05)
            else:  # wte and every linear weight
                v = normal(p.shape, 0.15)
            # Round to float32 so the stored parameters are exactly the ones used here.
            p.copy_(v.float().double())


def make_batch(gen):
    lengths = torch.tensor(LENGTHS, dtype=torch.long)
    valid = torch.arange(MAX_LEN)[None, None, :] < lengths[..., None]           # (T, B, L)
    tokens = torch.randint(0, CFG.vocab_size, (T, B, MAX_LEN), generator=gen) * valid
    choices = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    weights = choices[torch.randint(0, 3, (T, B, MAX_LEN), generator=gen)]
    # A few valid target positions weigh 0 (they must carry no loss at all).
    for t, b, i in [(0, 0, 3), (1, 1, 2), (2, 0, 4)]:
        assert i < LENGTHS[t][b]
        weights[t, b, i] = 0.0
    weights = weights * valid
    return tokens, lengths, weights


def grads_of(model, tokens, lengths, weights, bptt, reconstruct_weight=0.0, reconstruct_delay=0):
    model.zero_grad()
    out = model.forward_batch(tokens, lengths, weights, bptt, reconstruct_weight=reconstruct_weight,
                              reconstruct_delay=reconstruct_delay)
    out["objective"].backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    return out, grads


def truncated_objective(model, tokens, lengths, weights, bptt, boundary):
    """The function whose gradient truncated BPTT computes: each chunk after the first starts
    from a fixed state (boundary[c] = state computed with the unperturbed parameters)."""
    num, wsum = 0.0, 0.0
    for c, start in enumerate(range(0, T, bptt)):
        sl = slice(start, min(start + bptt, T))
        out = model.forward_batch(tokens[sl], lengths[sl], weights[sl], None,
                                  r_init=None if c == 0 else boundary[start - 1])
        num += float(out["num"])
        wsum += float(out["weight"])
    return num / wsum


def fd_probe(model, f, name, index, h=1e-5):
    """Central finite difference of f() in one parameter entry."""
    p = dict(model.named_parameters())[name]
    with torch.no_grad():
        old = p[index].item()
        p[index] = old + h
        fp = f()
        p[index] = old - h
        fm = f()
        p[index] = old
    return (fp - fm) / (2 * h)


def fd_direction(model, f, direction, h=1e-5):
    """Central finite difference of f() along a direction in the whole parameter space."""
    params = dict(model.named_parameters())
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, d in direction.items():
            params[n].copy_(saved[n] + h * d)
        fp = f()
        for n, d in direction.items():
            params[n].copy_(saved[n] - h * d)
        fm = f()
        for n in direction:
            params[n].copy_(saved[n])  # exact restore (p + hd - hd is not exact)
    return (fp - fm) / (2 * h)


def key_bias_mask(name, shape):
    """True on the key slice of c_attn.bias: its gradient is analytically zero (softmax is
    invariant to q.b_k, the same for every key), so any computed value there is rounding."""
    m = torch.zeros(shape, dtype=torch.bool)
    if name.endswith("attn.c_attn.bias"):
        C = shape[0] // 3
        m[C:2 * C] = True
    return m


def fp32_report(init, tokens, lengths, weights, out, grads, adam_losses, adam_params, hp):
    m32 = MnemoRef(CFG).float()
    with torch.no_grad():
        for n, p in m32.named_parameters():
            p.copy_(init[n].float())
    m32.zero_grad()
    o = m32.forward_batch(tokens, lengths, weights.float(), BPTT)
    o["loss"].backward()
    gnorm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    print("fp32 torch run vs float64 truth (max abs diff):")
    print(f"  loss {abs(float(o['loss']) - float(out['loss'])):.1e}"
          f"  logits {float((o['logits'].double() - out['logits']).abs().max()):.1e}"
          f"  states {float((o['states'].double() - out['states']).abs().max()):.1e}")
    gd = max(float((p.grad.double() - grads[n]).abs().max()) for n, p in m32.named_parameters())
    print(f"  grads {gd:.1e} (global grad norm {gnorm:.3f})")
    opt = make_adamw(m32, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"])
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        m32.forward_batch(tokens, lengths, weights.float(), BPTT)["loss"].backward()
        clip_grads(m32, hp["grad_clip"])
        opt.step()
    worst_kb, worst_rest = 0.0, 0.0
    for n, p in m32.named_parameters():
        d = (p.detach().double() - adam_params[n]).abs()
        kb = key_bias_mask(n, tuple(p.shape))
        worst_kb = max(worst_kb, float(d[kb].max()) if kb.any() else 0.0)
        worst_rest = max(worst_rest, float(d[~kb].max()))
    print(f"  adamw params after {ADAMW['steps']} steps: {worst_rest:.1e} "
          f"(attention key-bias slices: {worst_kb:.1e})")


# HDF5 stamps object headers with times by default; switching that off (and keeping the
# creation order of links, so /params lists tensors in docs/model.md order) makes the file
# byte-identical on every run, so a regenerated fixture shows no spurious git diff.
def _no_times(plist):
    plist.set_obj_track_times(False)
    plist.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    return plist


def open_h5_reproducible(path):
    fcpl = _no_times(h5py.h5p.create(h5py.h5p.FILE_CREATE))
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl)
    return h5py.File(fid)


def new_group(parent, name):
    gcpl = _no_times(h5py.h5p.create(h5py.h5p.GROUP_CREATE))
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-rule", default="gate", choices=("gate", "slot", "delta"))
    ap.add_argument("--out", help="default tests/fixtures/tiny_model.h5, tiny_model_<rule>.h5 for slot and delta")
    args = ap.parse_args()
    global CFG
    CFG = dataclasses.replace(CFG, write_rule=args.write_rule)
    if args.out is None:
        suffix = "" if args.write_rule == "gate" else "_" + args.write_rule
        args.out = os.path.join(REPO, "tests", "fixtures", f"tiny_model{suffix}.h5")
    write_weight = "memory.gate.weight" if args.write_rule == "gate" else "memory.write.weight"

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = MnemoRef(CFG).double()
    init_params(model, gen)
    tokens, lengths, weights = make_batch(gen)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}

    # --- self-checks of the reference itself
    naive = check_against_naive(model, tokens, lengths, weights)
    print("naive loop vs module, max abs diff:", {k: f"{v:.1e}" for k, v in naive.items()})

    # --- forward + gradients, truncated (bptt=2) and full
    out, grads = grads_of(model, tokens, lengths, weights, BPTT)
    out_full, grads_full = grads_of(model, tokens, lengths, weights, T)
    loss = float(out["loss"])
    assert math.isfinite(loss)
    assert abs(loss - float(out_full["loss"])) < 1e-14, "truncation must not change the loss"
    print(f"loss {loss:.6f}  turn losses {[round(float(x), 6) for x in out['turn_losses']]}")

    states = out["states"]
    for t in range(1, T):
        assert float((states[t] - states[t - 1]).abs().max()) > 1e-3, "state must change"
    assert float((states[0] - model.memory.r0.detach()[None]).abs().max()) > 1e-3
    print("state change per turn (max abs):",
          [f"{float((states[t] - (states[t - 1] if t else model.memory.r0.detach()[None])).abs().max()):.3f}"
           for t in range(T)])

    gdiff = max(float((grads[n] - grads_full[n]).abs().max()) for n in grads)
    assert gdiff > 1e-4, "grads with bptt=2 must differ from full BPTT"
    print(f"grads vs grads_full: max abs diff {gdiff:.3e}")
    for n in (write_weight, "compressor.h.0.attn.c_attn.weight", "memory.r0",
              "decoder.h.0.attn.c_attn.weight"):
        print(f"  {n}: |g_trunc| {float(grads[n].norm()):.4e}  |g_full| "
              f"{float(grads_full[n].norm()):.4e}  |diff| {float((grads[n] - grads_full[n]).norm()):.4e}")

    # --- finite differences: full loss vs grads_full, truncated objective vs grads
    def f_full():
        return float(model.forward_batch(tokens, lengths, weights, None)["loss"])

    boundary = [s.clone() for s in states]

    def f_trunc():
        return truncated_objective(model, tokens, lengths, weights, BPTT, boundary)

    assert abs(f_trunc() - loss) < 1e-14
    worst_fd = 0.0
    probes = [write_weight, "wte", "memory.r0", "compressor.h.1.mlp.c_fc.weight",
              "decoder.h.0.attn.c_attn.weight"] + ["memory.write.bias"] * (args.write_rule != "gate") \
        + ["memory.write.diag"] * (args.write_rule == "delta")
    for gname, g, f in (("grads_full", grads_full, f_full), ("grads", grads, f_trunc)):
        for name in probes:
            # The entry with the largest gradient, so the relative error is meaningful.
            idx = np.unravel_index(int(g[name].abs().argmax()), tuple(g[name].shape))
            idx = tuple(int(i) for i in idx)
            fd = fd_probe(model, f, name, idx)
            ad = float(g[name][idx])
            r = rel(fd, ad)
            worst_fd = max(worst_fd, r)
            print(f"  FD {gname:10s} {name}{list(idx)}: autograd {ad:+.10e} fd {fd:+.10e} rel {r:.1e}")
            assert r < 1e-6, "finite-difference check failed"
        dgen = torch.Generator().manual_seed(SEED + 1)
        direction = {n: torch.randn(p.shape, generator=dgen, dtype=torch.float64)
                     for n, p in model.named_parameters()}
        dnorm = math.sqrt(sum(float((d ** 2).sum()) for d in direction.values()))
        direction = {n: d / dnorm for n, d in direction.items()}  # unit step length h
        ad = sum(float((g[n] * d).sum()) for n, d in direction.items())
        fd = fd_direction(model, f, direction)
        r = rel(fd, ad)
        worst_fd = max(worst_fd, r)
        print(f"  FD {gname:10s} random direction: autograd {ad:+.10e} fd {fd:+.10e} rel {r:.1e}")
        assert r < 1e-6

    # --- the reconstruction aid, truncated: its own gradients, the same loss; the full-BPTT
    # objective checked against finite differences along a random direction
    out_r, grads_recon = grads_of(model, tokens, lengths, weights, BPTT, RECONSTRUCT_WEIGHT)
    assert abs(float(out_r["loss"]) - loss) < 1e-14, "the reported loss stays the plain one"
    recon_loss = float(out_r["recon_loss"])
    rdiff = max(float((grads_recon[n] - grads[n]).abs().max()) for n in grads)
    assert rdiff > 1e-4, "the reconstruction must change the gradients"
    print(f"reconstruction loss {recon_loss:.6f}; grads change by up to {rdiff:.3e}")
    _, grads_recon_full = grads_of(model, tokens, lengths, weights, T, RECONSTRUCT_WEIGHT)

    def check_recon_fd(what, grads_ad, delay):
        """The full-BPTT reconstruction objective's gradient against finite differences."""
        def objective():
            return float(model.forward_batch(tokens, lengths, weights, None, reconstruct_weight=RECONSTRUCT_WEIGHT,
                                             reconstruct_delay=delay)["objective"])
        ad = sum(float((grads_ad[n] * d).sum()) for n, d in direction.items())
        fd = fd_direction(model, objective, direction)
        print(f"  FD {what} random direction: autograd {ad:+.10e} fd {fd:+.10e} rel {rel(fd, ad):.1e}")
        assert rel(fd, ad) < 1e-6

    check_recon_fd("reconstruction (full BPTT)", grads_recon_full, 0)

    # --- delayed reconstruction (full BPTT: turns 0 and 1 decoded again from R_1 and R_2; turn 2
    # has no later state), checked against finite differences the same way
    out_d, grads_recon_delay = grads_of(model, tokens, lengths, weights, T, RECONSTRUCT_WEIGHT,
                                        RECONSTRUCT_DELAY)
    recon_loss_delay = float(out_d["recon_loss"])
    ddiff = max(float((grads_recon_delay[n] - grads_recon_full[n]).abs().max()) for n in grads)
    assert ddiff > 1e-4, "the delay must change the gradients"

    print(f"delayed reconstruction (delay {RECONSTRUCT_DELAY}) loss {recon_loss_delay:.6f}")
    check_recon_fd(f"reconstruction (delay {RECONSTRUCT_DELAY})", grads_recon_delay, RECONSTRUCT_DELAY)

    # --- AdamW: hyper-parameters as the C side holds them (float32)
    hp = {k: f32(v) for k, v in ADAMW.items() if k != "steps"}
    hp_tuple = (hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"], hp["grad_clip"])
    worst_adam = check_adamw(model, tokens, lengths, weights, BPTT, hp_tuple, steps=ADAMW["steps"])
    print(f"torch.optim.AdamW vs docs formula: max abs diff {worst_adam:.1e}")
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), init[n])  # the checks used copies
    opt = make_adamw(model, hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"])
    adam_losses, adam_norms = [], []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        l = model.forward_batch(tokens, lengths, weights, BPTT)["loss"]
        l.backward()
        adam_losses.append(float(l))
        adam_norms.append(clip_grads(model, hp["grad_clip"]))
        opt.step()
    print("AdamW losses", [f"{x:.6f}" for x in adam_losses], "grad norms",
          [f"{x:.4f}" for x in adam_norms])
    assert max(adam_norms) > hp["grad_clip"], "clip must be active in at least one step"
    assert adam_losses[-1] < adam_losses[0]
    adam_params = {n: p.detach().clone() for n, p in model.named_parameters()}
    # Sensitivity note for the C test: entries whose step-1 gradient is tiny but nonzero get
    # a sign-like first Adam update that fp32 noise could flip.
    g1 = torch.cat([g.flatten() for g in grads.values()]).abs()
    nz = g1[g1 > 0]
    print(f"step-1 grads: {int((g1 == 0).sum())} exact zeros, smallest nonzero |g| "
          f"{float(nz.min()):.2e}, {int((nz < 1e-6).sum())} below 1e-6")

    # --- informational: the same reference run in float32 vs this float64 truth. A rough
    # guide to the tolerances a C fp32 test needs (not stored, not asserted).
    fp32_report(init, tokens, lengths, weights, out, grads, adam_losses, adam_params, hp)

    # --- write
    def ds(group, name, x):
        group.create_dataset(name, data=np.asarray(x, dtype=np.float32), track_times=False)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Write a temporary file and rename it over the fixture: a test reading the old file
    # meanwhile (HDF5 locks it) never sees a truncated or half-written one.
    tmp = args.out + ".tmp"
    with open_h5_reproducible(tmp) as h5:
        for key in ("vocab_size", "d_model", "n_heads", "n_layers", "n_comp_layers", "n_slots",
                    "max_turn_tokens"):
            h5.attrs[key] = np.int32(getattr(CFG, key))
        h5.attrs["gate_bias_init"] = np.float32(CFG.gate_bias_init)
        if CFG.write_rule != "gate":
            h5.attrs["write_rule"] = np.bytes_(CFG.write_rule)  # fixed-length: what mnemo reads
        for key, v in (("bptt", BPTT), ("B", B), ("T", T), ("max_len", MAX_LEN)):
            h5.attrs[key] = np.int32(v)
        h5.attrs["meta"] = (f"generated by scripts/reference/gen_fixture.py (seed {SEED}) with "
                            f"torch {torch.__version__}, h5py {h5py.__version__}, numpy "
                            f"{np.__version__}; computed in float64, stored float32; "
                            f"model definition docs/model.md")

        g = new_group(h5, "batch")
        g.create_dataset("tokens", data=tokens.numpy().astype(np.int32), track_times=False)
        g.create_dataset("lengths", data=lengths.numpy().astype(np.int32), track_times=False)
        ds(g, "loss_weights", weights.numpy())

        for gname, tensors in (("params", init), ("grads", grads), ("grads_full", grads_full),
                               ("grads_reconstruct", grads_recon),
                               ("grads_reconstruct_delay", grads_recon_delay)):
            g = new_group(h5, gname)
            for n, v in tensors.items():
                ds(g, n, v.numpy())

        g = new_group(h5, "outputs")
        ds(g, "loss", np.float32(loss))
        ds(g, "turn_losses", out["turn_losses"].numpy())
        ds(g, "logits", out["logits"].numpy())
        ds(g, "states", out["states"].numpy())
        ds(g, "recon_loss", np.float32(recon_loss))
        ds(g, "reconstruct_weight", np.float32(RECONSTRUCT_WEIGHT))
        ds(g, "recon_loss_delay", np.float32(recon_loss_delay))
        g.attrs["reconstruct_delay"] = np.int32(RECONSTRUCT_DELAY)

        g = new_group(h5, "adamw")
        for key in ("lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip"):
            g.attrs[key] = np.float32(hp[key])
        g.attrs["steps"] = np.int32(ADAMW["steps"])
        ds(g, "losses", adam_losses)
        ds(g, "grad_norms", adam_norms)
        gp = new_group(g, "params")
        for n, v in adam_params.items():
            ds(gp, n, v.numpy())

    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
