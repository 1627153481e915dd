#!/usr/bin/python3
"""PyTorch reference ("outside oracle") of the mnemo model, written from docs/model.md.

This is an independent, plain implementation of the architecture the C library computes:
a GPT-2 style decoder that reads a session vector R (k x C) as k prefix positions, and a
bidirectional compressor that folds each turn into R through a sigmoid update gate.
Parameter names and shapes are exactly those of docs/model.md (GPT-2 Conv1D layout (in, out)),
and named_parameters() yields them in the flat-buffer order of docs/model.md.

Runs with Debian's PyTorch (/usr/bin/python3: python3-torch 1.13.1, which reports itself as
1.13.0a0; numpy 1.24), and equally after `pip install torch h5py numpy` on any recent Python
(torch >= 1.12, for F.gelu(approximate="tanh")).

Usage as a library:
    from mnemo_ref import Config, MnemoRef
    model = MnemoRef(Config(...)).double()
    out = model.forward_batch(tokens, lengths, weights, bptt)   # out["loss"].backward()
Running this file directly performs the self-checks (attention vs a naive loop, padded batch vs
unpadded per-episode runs, AdamW vs the docs formula) on a small random model.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-5


@dataclass
class Config:
    vocab_size: int = 53        # V
    d_model: int = 16           # C
    n_heads: int = 2            # H
    n_layers: int = 2           # L, decoder blocks
    n_comp_layers: int = 2      # Lc, compressor blocks
    n_slots: int = 3            # k
    max_turn_tokens: int = 8    # N
    gate_bias_init: float = -1.0
    write_rule: str = "gate"    # "gate" | "slot" | "delta" (docs/model.md, "Write rules")

    @property
    def n_addr(self):
        """Address columns of the slot write: k for the delta rule, 0 otherwise."""
        return self.n_slots if self.write_rule == "delta" else 0


WRITE_DIAG_INIT = 4.0  # a delta-rule write's initial preference for its own slot (MN_WRITE_DIAG_INIT)


class Conv1D(nn.Module):
    """GPT-2's linear layer: weight stored (in, out), y = x @ W + b."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.c_attn = Conv1D(cfg.d_model, 3 * cfg.d_model)  # columns q | k | v
        self.c_proj = Conv1D(cfg.d_model, cfg.d_model)

    def forward(self, x, allowed):
        """x (B, S, C); allowed (B, S, S) bool, allowed[b, i, j] = query i may see key j."""
        B, S, C = x.shape
        H = self.n_heads
        hs = C // H
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, S, C) -> (B, H, S, hs): heads are contiguous column blocks inside q, k and v.
        q = q.view(B, S, H, hs).transpose(1, 2)
        k = k.view(B, S, H, hs).transpose(1, 2)
        v = v.view(B, S, H, hs).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        scores = scores.masked_fill(~allowed[:, None, :, :], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        y = (probs @ v).transpose(1, 2).reshape(B, S, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Conv1D(cfg.d_model, 4 * cfg.d_model)
        self.c_proj = Conv1D(4 * cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class LayerNorm(nn.Module):
    """Parameters named weight/bias like nn.LayerNorm; eps 1e-5."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, LN_EPS)


class Block(nn.Module):
    """Pre-LN GPT-2 block. Registration order = flat-buffer order of docs/model.md."""

    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln_2 = LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, allowed):
        x = x + self.attn(self.ln_1(x), allowed)
        x = x + self.mlp(self.ln_2(x))
        return x


class Stack(nn.Module):
    """Position table + blocks + final LayerNorm (the decoder and the compressor share this)."""

    def __init__(self, cfg, n_blocks):
        super().__init__()
        self.wpe = nn.Parameter(torch.zeros(cfg.n_slots + cfg.max_turn_tokens, cfg.d_model))
        self.h = nn.ModuleList([Block(cfg) for _ in range(n_blocks)])
        self.ln_f = LayerNorm(cfg.d_model)

    def forward(self, embeds, allowed):
        S = embeds.shape[1]
        x = embeds + self.wpe[:S]
        for block in self.h:
            x = block(x, allowed)
        return self.ln_f(x)


class SlotWrite(Conv1D):
    """The slot write's logits u @ weight + bias, (k, A+1): A address columns (the delta rule's,
    A = k) and the strength; diag (A) is added on the address logits' diagonal."""

    def __init__(self, cfg):
        super().__init__(cfg.d_model, cfg.n_addr + 1)
        if cfg.n_addr:
            self.diag = nn.Parameter(torch.zeros(cfg.n_addr))


class Memory(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.r0 = nn.Parameter(torch.zeros(cfg.n_slots, cfg.d_model))
        if cfg.write_rule == "gate":
            # gate.weight rows 0..C-1 act on R_{t-1}, rows C..2C-1 on U: cat(R, U) @ W + b.
            self.gate = Conv1D(2 * cfg.d_model, cfg.d_model)
        else:
            assert cfg.write_rule in ("slot", "delta")
            self.write = SlotWrite(cfg)


def is_decayed(name):
    """AdamW weight decay applies to wte, both wpe and every linear weight (docs/model.md)."""
    if name == "wte" or name.endswith(".wpe"):
        return True
    linear = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight", "memory.gate.weight", "memory.write.weight")
    return name.endswith(linear)


class MnemoRef(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.d_model % cfg.n_heads == 0
        self.cfg = cfg
        # Registration order gives named_parameters() the flat order of docs/model.md.
        self.wte = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.d_model))
        self.decoder = Stack(cfg, cfg.n_layers)
        self.compressor = Stack(cfg, cfg.n_comp_layers)
        self.memory = Memory(cfg)
        with torch.no_grad():
            if cfg.write_rule == "gate":
                self.memory.gate.bias.fill_(cfg.gate_bias_init)
            else:
                self.memory.write.bias[-1] = cfg.gate_bias_init
                if cfg.n_addr:
                    self.memory.write.diag.fill_(WRITE_DIAG_INIT)

    # ------------------------------------------------------------------ helpers
    def _key_valid(self, lengths, n):
        """(B, k+n) bool: the k slots are always valid, token j is valid iff j < length."""
        B = lengths.shape[0]
        k = self.cfg.n_slots
        slots = torch.ones(B, k, dtype=torch.bool, device=lengths.device)
        toks = torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]
        return torch.cat([slots, toks], dim=1)

    def _inputs(self, R, tokens):
        """concat(R, wte[tokens]) along the sequence axis: (B, k+n, C)."""
        return torch.cat([R, self.wte[tokens]], dim=1)

    @staticmethod
    def _lengths(tokens, lengths):
        if lengths is None:
            return torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long)
        return torch.as_tensor(lengths, dtype=torch.long)

    # ------------------------------------------------------------------ the two transformers
    def decode(self, R, tokens, lengths=None):
        """Decoder logits of a batch turn. R (B, k, C), tokens (B, n) -> logits (B, n, V);
        row i (position k+i) predicts token i+1. Rows at padded positions are junk."""
        lengths = self._lengths(tokens, lengths)
        k, n = self.cfg.n_slots, tokens.shape[1]
        S = k + n
        causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
        allowed = causal[None] & self._key_valid(lengths, n)[:, None, :]
        Y = self.decoder(self._inputs(R, tokens), allowed)
        return Y[:, k:] @ self.wte.t()

    def update(self, R, tokens, lengths=None):
        """Compressor: R_t (B, k, C) from R_{t-1} (B, k, C) and the turn tokens (B, n)."""
        lengths = self._lengths(tokens, lengths)
        k, n = self.cfg.n_slots, tokens.shape[1]
        # Bidirectional: every query sees every valid key.
        allowed = self._key_valid(lengths, n)[:, None, :].expand(-1, k + n, -1)
        U = self.compressor(self._inputs(R, tokens), allowed)[:, :k]
        return self.write(R, U)

    def write(self, R, U):
        """The write into R (docs/model.md, "Write rules"): R_t from R_{t-1} and U, both (B, k, C)."""
        if self.cfg.write_rule == "gate":
            z = torch.sigmoid(torch.cat([R, U], dim=-1) @ self.memory.gate.weight
                              + self.memory.gate.bias)
            return (1 - z) * R + z * U
        A = self.cfg.n_addr
        pre = self.memory.write(U)                                  # (B, k, A+1)
        if A:
            address = torch.softmax(pre[..., :A] + torch.diag(self.memory.write.diag), dim=-1)
        else:
            address = torch.eye(self.cfg.n_slots, dtype=U.dtype).expand(U.shape[0], -1, -1)
        beta = torch.sigmoid(pre[..., A])                           # (B, k)
        E = U - address @ R                                         # what each write would change
        return R + address.transpose(1, 2) @ (beta[..., None] * E)

    # ------------------------------------------------------------------ episodes
    def forward_batch(self, tokens, lengths, weights=None, bptt=None, r_init=None, reconstruct_weight=0.0,
                      reconstruct_delay=0):
        """Runs B episodes of T turns. tokens (T, B, max_len) ints, lengths (T, B),
        weights (T, B, max_len) or None (all 1); weights[t, b, i] weights predicting token i.
        bptt: truncation K (None or >= T: full BPTT). r_init (B, k, C): state entering turn 1
        (default R_0 broadcast); streaming (docs/model.md) passes the previous window's
        states[-1].detach() for carried lanes and R_0 for the others. reconstruct_weight lam > 0: every turn t is decoded again from
        R_t (the state that has just read it) with the same weights (the training aid of
        mn_trainer_set_reconstruction). reconstruct_delay D: turn t is decoded again from R_{t+D}
        instead, only where t+D lies in t's BPTT chunk (mn_trainer_set_reconstruction_delay).
        Returns dict with
          loss        scalar, sum w*ce / sum w over the whole batch (differentiable)
          turn_losses (T,) the same ratio restricted to each turn (detached)
          logits      (T, B, max_len, V) with padded rows set to 0 (detached)
          states      (T, B, k, C) R after each turn (detached)
          num, weight the weighted CE sum (differentiable) and the total weight
          objective   (num + lam * recon_num) / weight: what training differentiates
          recon_loss  recon_num / weight (detached; 0 without reconstruction)"""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        T, B, max_len = tokens.shape
        dtype = self.wte.dtype
        if weights is None:
            weights = torch.ones(T, B, max_len, dtype=dtype)
        weights = torch.as_tensor(weights).to(dtype)
        K = T if bptt is None or bptt <= 0 else bptt
        k, C, V = self.cfg.n_slots, self.cfg.d_model, self.cfg.vocab_size

        if r_init is None:
            R = self.memory.r0[None].expand(B, k, C)
        else:
            R = r_init
        nums, wsums, all_logits, states, recon_nums = [], [], [], [], []
        D = reconstruct_delay
        pos = torch.arange(max_len)
        for t in range(T):
            if t > 0 and t % K == 0:
                # Start of a new BPTT chunk: the entering state is a constant.
                R = R.detach()
            logits = self.decode(R, tokens[t], lengths[t])          # (B, max_len, V)
            # Position i predicts token i+1, for i+1 < len; padded targets weigh 0.
            has_target = (pos[None, 1:] < lengths[t][:, None]).to(dtype)   # (B, max_len-1)
            w = weights[t][:, 1:] * has_target
            ce = F.cross_entropy(logits[:, :-1].reshape(-1, V),
                                 tokens[t][:, 1:].reshape(-1), reduction="none")
            nums.append((w.reshape(-1) * ce).sum())
            wsums.append(w.sum())
            valid_row = (pos[None, :] < lengths[t][:, None]).to(dtype)[..., None]
            all_logits.append((logits * valid_row).detach())
            R = self.update(R, tokens[t], lengths[t])
            states.append(R.detach())
            s = t - D  # the turn decoded again from R_t
            if reconstruct_weight and s >= (t // K) * K:
                # R_t is not detached here even at a chunk's end: this loss reaches back into the chunk
                logits_r = self.decode(R, tokens[s], lengths[s])
                has_target_s = (pos[None, 1:] < lengths[s][:, None]).to(dtype)
                w_s = weights[s][:, 1:] * has_target_s
                ce_r = F.cross_entropy(logits_r[:, :-1].reshape(-1, V),
                                       tokens[s][:, 1:].reshape(-1), reduction="none")
                recon_nums.append((w_s.reshape(-1) * ce_r).sum())

        num = torch.stack(nums).sum()
        weight = torch.stack(wsums).sum()
        loss = num / weight
        turn_losses = torch.stack([(a / b).detach() for a, b in zip(nums, wsums)])
        recon_num = torch.stack(recon_nums).sum() if recon_nums else torch.zeros((), dtype=dtype)
        objective = (num + reconstruct_weight * recon_num) / weight if recon_nums else loss
        return {"loss": loss, "turn_losses": turn_losses, "logits": torch.stack(all_logits),
                "states": torch.stack(states), "num": num, "weight": weight.detach(),
                "objective": objective, "recon_loss": (recon_num / weight).detach()}


# ---------------------------------------------------------------------- optimizer
def make_adamw(model, lr, beta1, beta2, eps, weight_decay):
    """torch AdamW with two groups: decayed tensors and the rest (docs/model.md)."""
    decay = [p for n, p in model.named_parameters() if is_decayed(n)]
    no_decay = [p for n, p in model.named_parameters() if not is_decayed(n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(beta1, beta2), eps=eps)


def clip_grads(model, grad_clip):
    """Global-norm clip with torch semantics (coef = clip / (norm + 1e-6), clamped at 1).
    Returns the norm before clipping."""
    params = [p for p in model.parameters()]
    if grad_clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    return float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))


class ManualAdamW:
    """The docs/model.md formula written out, to cross-check torch.optim.AdamW."""

    def __init__(self, named_params, lr, beta1, beta2, eps, weight_decay, grad_clip):
        self.hp = (lr, beta1, beta2, eps, weight_decay, grad_clip)
        self.t = 0
        self.m = {n: torch.zeros_like(p) for n, p in named_params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in named_params.items()}

    def step(self, params, grads):
        """params, grads: dict name -> tensor; params updated in place. Returns pre-clip norm."""
        lr, b1, b2, eps, wd, clip = self.hp
        norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
        scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
        self.t += 1
        for n, p in params.items():
            g = grads[n] * scale
            if is_decayed(n):
                p -= lr * wd * p
            self.m[n] = b1 * self.m[n] + (1 - b1) * g
            self.v[n] = b2 * self.v[n] + (1 - b2) * g * g
            mhat = self.m[n] / (1 - b1 ** self.t)
            vhat = self.v[n] / (1 - b2 ** self.t)
            p -= lr * mhat / (torch.sqrt(vhat) + eps)
        return norm


# ---------------------------------------------------------------------- naive re-implementation
# Loops over positions, heads and keys, with LayerNorm and GELU from their formulas; shares no
# code with the module above. Used only to check it.
def _naive_ln(x, w, b):
    mu = sum(x) / len(x)
    var = sum((xi - mu) ** 2 for xi in x) / len(x)
    return [(x[i] - mu) / math.sqrt(var + LN_EPS) * w[i] + b[i] for i in range(len(x))]


def _naive_linear(x, W, b):
    n_in, n_out = len(W), len(W[0])
    return [sum(x[i] * W[i][j] for i in range(n_in)) + b[j] for j in range(n_out)]


def _naive_gelu(x):
    return 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _naive_stack(P, prefix, n_blocks, H, X, causal):
    """X: list of S rows (lists of C floats), every position valid."""
    S, C = len(X), len(X[0])
    hs = C // H
    wpe = P[prefix + "wpe"]
    X = [[X[i][c] + wpe[i][c] for c in range(C)] for i in range(S)]
    for l in range(n_blocks):
        p = f"{prefix}h.{l}."
        A = [_naive_ln(x, P[p + "ln_1.weight"], P[p + "ln_1.bias"]) for x in X]
        qkv = [_naive_linear(a, P[p + "attn.c_attn.weight"], P[p + "attn.c_attn.bias"]) for a in A]
        Y = [[0.0] * C for _ in range(S)]
        for h in range(H):
            for i in range(S):
                keys = range(i + 1) if causal else range(S)
                q = qkv[i][h * hs:(h + 1) * hs]
                s = [sum(q[d] * qkv[j][C + h * hs + d] for d in range(hs)) / math.sqrt(hs)
                     for j in keys]
                mx = max(s)
                e = [math.exp(v - mx) for v in s]
                z = sum(e)
                for d in range(hs):
                    Y[i][h * hs + d] = sum(e[a] / z * qkv[j][2 * C + h * hs + d]
                                           for a, j in enumerate(keys))
        X = [[X[i][c] + o for c, o in enumerate(
            _naive_linear(Y[i], P[p + "attn.c_proj.weight"], P[p + "attn.c_proj.bias"]))]
            for i in range(S)]
        for i in range(S):
            a = _naive_ln(X[i], P[p + "ln_2.weight"], P[p + "ln_2.bias"])
            hdn = [_naive_gelu(v) for v in _naive_linear(a, P[p + "mlp.c_fc.weight"],
                                                          P[p + "mlp.c_fc.bias"])]
            o = _naive_linear(hdn, P[p + "mlp.c_proj.weight"], P[p + "mlp.c_proj.bias"])
            X[i] = [X[i][c] + o[c] for c in range(C)]
    return [_naive_ln(x, P[prefix + "ln_f.weight"], P[prefix + "ln_f.bias"]) for x in X]


def _naive_slot_write(P, cfg, R, U):
    """The slot write rules entry by entry (the per-slot gate and the delta rule)."""
    k, C, A = cfg.n_slots, cfg.d_model, cfg.n_addr
    W, b = P["memory.write.weight"], P["memory.write.bias"]
    address, beta = [], []
    for w in range(k):
        pre = [sum(U[w][i] * W[i][p] for i in range(C)) + b[p] for p in range(A + 1)]
        if A:
            logits = [pre[j] + (P["memory.write.diag"][w] if j == w else 0.0) for j in range(k)]
            m = max(logits)
            e = [math.exp(x - m) for x in logits]
            address.append([x / sum(e) for x in e])
        else:
            address.append([1.0 if j == w else 0.0 for j in range(k)])
        beta.append(1 / (1 + math.exp(-pre[A])))
    E = [[U[w][c] - sum(address[w][j] * R[j][c] for j in range(k)) for c in range(C)] for w in range(k)]
    return [[R[j][c] + sum(address[w][j] * beta[w] * E[w][c] for w in range(k)) for c in range(C)]
            for j in range(k)]


def naive_turn(model, R, tokens):
    """One unpadded turn of one episode. R: (k, C) list rows, tokens: list of ints.
    Returns (logits n x V, new R k x C) as nested lists."""
    cfg = model.cfg
    P = {n: p.detach().double().tolist() for n, p in model.named_parameters()}
    k, C = cfg.n_slots, cfg.d_model
    X = [list(r) for r in R] + [list(P["wte"][tok]) for tok in tokens]
    Yd = _naive_stack(P, "decoder.", cfg.n_layers, cfg.n_heads, X, causal=True)
    logits = [[sum(Yd[k + i][c] * P["wte"][v][c] for c in range(C))
               for v in range(cfg.vocab_size)] for i in range(len(tokens))]
    Yc = _naive_stack(P, "compressor.", cfg.n_comp_layers, cfg.n_heads, X, causal=False)
    if cfg.write_rule != "gate":
        return logits, _naive_slot_write(P, cfg, R, Yc[:k])
    Gw, Gb = P["memory.gate.weight"], P["memory.gate.bias"]
    R_new = []
    for s in range(k):
        u = Yc[s]
        row = []
        for c in range(C):
            a = sum(R[s][i] * Gw[i][c] for i in range(C)) + \
                sum(u[i] * Gw[C + i][c] for i in range(C)) + Gb[c]
            z = 1 / (1 + math.exp(-a))
            row.append((1 - z) * R[s][c] + z * u[c])
        R_new.append(row)
    return logits, R_new


def naive_forward_batch(model, tokens, lengths, weights):
    """Loop-by-loop episode run: per episode, per turn, unpadded. Returns loss, turn losses,
    logits (T, B, max_len, V) zero-padded, states (T, B, k, C), all as float64 tensors."""
    tokens = torch.as_tensor(tokens).tolist()
    lengths = torch.as_tensor(lengths).tolist()
    weights = torch.as_tensor(weights).double().tolist()
    T, B, max_len = len(tokens), len(tokens[0]), len(tokens[0][0])
    cfg = model.cfg
    V, k, C = cfg.vocab_size, cfg.n_slots, cfg.d_model
    logits_out = torch.zeros(T, B, max_len, V, dtype=torch.float64)
    states = torch.zeros(T, B, k, C, dtype=torch.float64)
    num_t, w_t = [0.0] * T, [0.0] * T
    for b in range(B):
        R = model.memory.r0.detach().double().tolist()
        for t in range(T):
            n = lengths[t][b]
            toks = tokens[t][b][:n]
            logits, R = naive_turn(model, R, toks)
            logits_out[t, b, :n] = torch.tensor(logits, dtype=torch.float64)
            states[t, b] = torch.tensor(R, dtype=torch.float64)
            for i in range(n - 1):
                row = logits[i]
                mx = max(row)
                lse = mx + math.log(sum(math.exp(x - mx) for x in row))
                w = weights[t][b][i + 1]
                num_t[t] += w * (lse - row[toks[i + 1]])
                w_t[t] += w
    loss = sum(num_t) / sum(w_t)
    turn_losses = torch.tensor([a / c for a, c in zip(num_t, w_t)], dtype=torch.float64)
    return loss, turn_losses, logits_out, states


# ---------------------------------------------------------------------- self-checks
def check_against_naive(model, tokens, lengths, weights, tol=1e-10):
    """Module (batched, padded, masked) vs naive loops (unpadded). Returns max abs diffs."""
    with torch.no_grad():
        out = model.forward_batch(tokens, lengths, weights)
    loss, tl, logits, states = naive_forward_batch(model, tokens, lengths, weights)
    diffs = {"loss": abs(float(out["loss"]) - loss),
             "turn_losses": float((out["turn_losses"] - tl).abs().max()),
             "logits": float((out["logits"] - logits).abs().max()),
             "states": float((out["states"] - states).abs().max())}
    for key, d in diffs.items():
        assert d < tol, f"naive check failed on {key}: {d}"
    return diffs


def check_adamw(model, tokens, lengths, weights, bptt, hp, steps=2, tol=1e-10):
    """torch.optim.AdamW + clip_grad_norm_ vs the docs formula, on a copy of the model."""
    import copy
    lr, b1, b2, eps, wd, clip = hp
    m1 = copy.deepcopy(model)
    m2 = copy.deepcopy(model)
    opt = make_adamw(m1, lr, b1, b2, eps, wd)
    manual = ManualAdamW(dict(m2.named_parameters()), lr, b1, b2, eps, wd, clip)
    worst = 0.0
    for _ in range(steps):
        opt.zero_grad()
        m1.forward_batch(tokens, lengths, weights, bptt)["loss"].backward()
        n1 = clip_grads(m1, clip)
        opt.step()
        m2.zero_grad()
        m2.forward_batch(tokens, lengths, weights, bptt)["loss"].backward()
        with torch.no_grad():
            params = dict(m2.named_parameters())
            grads = {n: p.grad.clone() for n, p in params.items()}
            n2 = manual.step(params, grads)
        assert abs(n1 - n2) <= 1e-12 * max(1.0, n1), (n1, n2)
        for (na, pa), (nb, pb) in zip(m1.named_parameters(), m2.named_parameters()):
            worst = max(worst, float((pa - pb).abs().max()))
    assert worst < tol, f"AdamW mismatch {worst}"
    return worst


if __name__ == "__main__":
    torch.manual_seed(0)
    cfg = Config()
    model = MnemoRef(cfg).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn_like(p))
    T, B, L = 3, 2, 7
    lengths = torch.tensor([[7, 4], [3, 6], [5, 2]])
    tokens = torch.randint(0, cfg.vocab_size, (T, B, L)) * (torch.arange(L) < lengths[..., None])
    weights = torch.rand(T, B, L, dtype=torch.float64) * (torch.arange(L) < lengths[..., None])
    print("naive check (max abs diff):", check_against_naive(model, tokens, lengths, weights))
    print("AdamW check (max abs diff):",
          check_adamw(model, tokens, lengths, weights, 2, (0.01, 0.9, 0.95, 1e-8, 0.1, 1.0)))
    for n, p in model.named_parameters():
        print(f"  {n:40s} {tuple(p.shape)} decay={int(is_decayed(n))}")
