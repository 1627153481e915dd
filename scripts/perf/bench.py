#!/usr/bin/python3
"""Orchestrates scripts/bench (issue 7): runs mnemo_perf and the PyTorch reference driver, and
prints one markdown report in which every figure is a ratio (or a value) measured in this run.

Standard library only (runs under Debian's /usr/bin/python3). Torch runs use
  - --torch-python (default `python3` from PATH, or $MNEMO_BENCH_TORCH_PYTHON): PyPI's current
    torch (pip install torch), the fair peer for speed; its version is printed in the report;
  - /usr/bin/python3: Debian's python3-torch 1.13, a second data point;
each skipped with a note if that interpreter has no torch.

results.md is the report; results.json beside it holds every figure under a stable key
(RESULT_KEYS below; null where a section was not run or had nothing to compare with).

Noise: the machine is shared and its load swings within seconds, so training runs are paired:
two processes (mnemo and the system compared) stay alive and take single steps in turn, and
each ratio is taken inside a pair; the report gives medians over pairs. Every process gets the same OpenMP environment:
OMP_NUM_THREADS=2 and OMP_WAIT_POLICY=passive (spinning waiters cost both mnemo and torch a
lot when other processes share the two cores; passive is better for both, see docs/perf.md).
mnemo also gets OPENBLAS_NUM_THREADS=1: products then run on the OpenMP team (src/cpu/op_gemm.c).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "reference"))
from batches import read_batches  # noqa: E402

CONFIGS = {
    # name: model config, batch
    "demo": dict(vocab=4096, width=256, heads=4, layers=4, comp_layers=2, slots=16, max_turn=128,
                 batch=8, turns=8, bptt=8, turn_tokens=128),
    "4x": dict(vocab=8192, width=512, heads=8, layers=4, comp_layers=2, slots=16, max_turn=128,
               batch=8, turns=8, bptt=8, turn_tokens=128),
    "quick": dict(vocab=512, width=64, heads=2, layers=2, comp_layers=1, slots=4, max_turn=16,
                  batch=2, turns=2, bptt=2, turn_tokens=16),
}


# The keys of results.json, by section; the run checks that each section it ran wrote its keys.
RESULT_KEYS = {
    "train": ["train.{cfg}.mnemo_tokens_per_s", "train.{cfg}.torch_eager_over_mnemo",
              "train.{cfg}.torch_sdpa_over_mnemo", "train.{cfg}.torch_compile_over_mnemo"],
    "efficiency": ["efficiency.{cfg}", "efficiency.{cfg}.effective_gflops", "efficiency.{cfg}.sgemm_gflops"],
    "turns": ["turns.last_over_first_paired", "turns.last_turn"],
    "blas": ["blas.losses_max_rel_diff", "blas.unset_over_set"],
    "memory": ["memory.train_peak_rss_mib", "memory.sessions_peak_rss_mib"],
    "real": ["train.real_dialogue.mnemo_tokens_per_s", "train.real_dialogue.mnemo_cut_to_longest_over_mnemo",
             "train.real_dialogue.torch_eager_over_mnemo",
             "train.real_dialogue.torch_sdpa_over_mnemo", "train.real_dialogue.torch_compile_over_mnemo",
             "train.real_dialogue.real_share_mnemo_positions", "train.real_dialogue.real_share_padded_to_longest",
             "train.real_dialogue.real_share_padded_per_turn", "train.real_dialogue.torch_eager_over_mnemo_cpu",
             "train.real_dialogue.torch_sdpa_over_mnemo_cpu", "train.real_dialogue.torch_compile_over_mnemo_cpu"],
    "eval": ["eval.probes_per_s", "eval.probes_per_cpu_s", "eval.baseline_time_over_this",
             "eval.baseline_probes_per_s", "eval.baseline_cpu_time_over_this", "eval.modes_same_as_baseline"],
}


def flops_per_token(c):
    """Forward+backward matrix FLOPs per token (mnemo_perf's formula)."""
    C, S, L = c["width"], c["slots"] + c["turn_tokens"], c["turn_tokens"]
    fwd = (c["layers"] * (24 * C * C * S + 4 * C * S * (S + 1) / 2) +
           c["comp_layers"] * (24 * C * C * S + 4 * C * S * S) + 2 * L * C * c["vocab"] +
           4 * c["slots"] * C * C)
    return 3 * fwd / L


def cfg_args(c, torch_style=False):
    keys = ["vocab", "width", "heads", "layers", "comp_layers", "slots", "max_turn", "batch", "turns",
            "bptt", "turn_tokens"]
    out = []
    for k in keys:
        out += ["--" + k.replace("_", "-"), str(c[k])]
    return out


class Runner:
    def __init__(self, out_dir, log):
        self.out_dir = out_dir
        self.log = log

    def env(self, env_extra=None, env_unset=()):
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "passive"})
        env.update(env_extra or {})
        for k in env_unset:
            env.pop(k, None)
        return env

    def note(self, name):
        with open(os.path.join(self.out_dir, "loadavg.log"), "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {name} load {open('/proc/loadavg').read().strip()}\n")

    def log_text(self):
        self.log.flush()
        return open(self.log.name).read()

    def run(self, name, cmd, env_extra=None, env_unset=(), timeout=3600, time_v=False):
        env = self.env(env_extra, env_unset)
        if time_v:
            cmd = ["/usr/bin/time", "-v"] + cmd
        t0 = time.time()
        self.note(name)
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        self.log.write(f"### {name} ({time.time() - t0:.1f} s, rc {p.returncode})\n$ {' '.join(cmd)}\n{p.stdout}\n")
        self.log.flush()
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed (rc {p.returncode}); see {self.log.name}\n{p.stdout[-2000:]}")
        return p.stdout


def field(text, key, cast=float, all_=False):
    vals = re.findall(r"(?:^|\s)" + re.escape(key) + r" (\S+)", text)
    if all_:
        return [cast(v) for v in vals]
    if not vals:
        raise RuntimeError(f"no '{key}' in output:\n{text[-1500:]}")
    return cast(vals[-1])


def max_rss_kib(text):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return int(m.group(1)) if m else None


def torch_available(python):
    if not shutil.which(python) and not os.path.exists(python):
        return None
    p = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def openmp_openblas_dir():
    """Where libopenblas0-openmp's library is: installed (apt), or unpacked without installing
    (apt-get download libopenblas0-openmp; dpkg -x *.deb DIR) and named by MNEMO_BENCH_OPENMP_BLAS."""
    for d in (os.environ.get("MNEMO_BENCH_OPENMP_BLAS", ""), "/usr/lib/x86_64-linux-gnu/openblas-openmp"):
        if d and os.path.exists(os.path.join(d, "libopenblas.so.0")):
            return d
    return None


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def cpu_ratio(cpu):
    """Median over pairs of b's CPU time / a's; None when the steps were too short for the clock
    tick of /proc (10 ms: --quick)."""
    ratios = [cb / ca for ca, cb in cpu if ca > 0 and cb > 0]
    return med(ratios) if ratios else None


def process_cpu_s(pid):
    """User + system CPU seconds of a live process (/proc/PID/stat; its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A training process in --serve mode: warms up, then runs one step per request."""

    def __init__(self, r, name, cmd, env_extra=None, env_unset=()):
        self.r, self.name = r, name
        env = r.env(env_extra, env_unset)
        r.note(f"start {name}")
        self.p = subprocess.Popen(cmd + ["--serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = [f"$ {' '.join(cmd)} --serve"]
        self.warmup_losses = []
        self.cpu_s = []  # CPU time (user + system) of each step: the work, whatever the load
        while True:
            line = self._readline()
            if line.startswith("warmup"):
                self.warmup_losses.append(float(line.split()[-1]))
            if line.strip() == "ready":
                break

    def _readline(self):
        line = self.p.stdout.readline()
        if not line:
            self.p.wait()
            self.r.log.write(f"### {self.name} (died, rc {self.p.returncode})\n" + "\n".join(self.lines) + "\n")
            raise RuntimeError(f"{self.name} exited early; see {self.r.log.name}")
        self.lines.append(line.rstrip())
        return line

    def step(self):
        """-> (seconds, loss, sgemm GFLOP/s or None); appends the step's CPU seconds to cpu_s"""
        cpu0 = process_cpu_s(self.p.pid)
        self.p.stdin.write("step\n")
        self.p.stdin.flush()
        while True:
            f = self._readline().split()
            if f and f[0] == "step":
                self.cpu_s.append(process_cpu_s(self.p.pid) - cpu0)
                sg = float(f[5]) if len(f) > 5 and f[4] == "sgemm_gflops" else None
                return float(f[2]), float(f[3]), sg

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        rest = self.p.stdout.read()
        self.p.wait()
        self.lines += rest.splitlines()
        self.r.log.write(f"### {self.name} (rc {self.p.returncode})\n" + "\n".join(self.lines) + "\n\n")
        self.r.log.flush()
        return rest


def paired(r, spec_a, spec_b, pairs, cpu=None):
    """Alternates single steps of two training processes (a first on even pairs, b first on odd
    ones), so that each pair sees the same machine load. Returns per-pair lists for a and b of
    (seconds, loss, sgemm), and both servers' warm-up losses; cpu (a list), if given, gets the
    (a, b) CPU seconds of each pair."""
    sa = Server(r, *spec_a)
    sb = Server(r, *spec_b)
    ra, rb = [], []
    try:
        for i in range(pairs):
            if i % 2 == 0:
                ra.append(sa.step())
                rb.append(sb.step())
            else:
                rb.append(sb.step())
                ra.append(sa.step())
    finally:
        sa.close()
        sb.close()
    if cpu is not None:
        cpu += list(zip(sa.cpu_s, sb.cpu_s))
    return ra, rb, sa.warmup_losses, sb.warmup_losses


# ---------------------------------------------------------------------------------- sections
def section_train(r, a, perf, report):
    cfgs = ["quick"] if a.quick else ["demo", "4x"]
    pypi = None if a.skip_torch else torch_available(a.torch_python)
    debian = None if a.skip_torch else torch_available("/usr/bin/python3")
    bench_torch = os.path.join(ROOT, "scripts", "reference", "bench_torch.py")
    report.append("## 1. Training throughput (forward + backward + AdamW, fp32, 2 threads)\n")
    report.append(f"PyPI torch: {pypi or 'not installed'}; Debian torch: {debian or 'not installed'}. "
                  "Each system is run next to mnemo, one step of each in turn (the order swaps every pair), "
                  "so that both see the same load on this shared machine; 'x mnemo time' is the median over "
                  "pairs of (its step time / mnemo's step time in the same pair). mnemo's row pools its steps "
                  "from every pairing.\n")
    eff_rows = []
    for name in cfgs:
        c = CONFIGS[name]
        pairs = 2 if a.quick else (a.pairs if name == "demo" else max(3, a.pairs * 2 // 3))
        mn_cmd = [perf, "train"] + cfg_args(c) + ["--warmup", "1"]
        mnemo = ("mnemo", mn_cmd, {"OPENBLAS_NUM_THREADS": "1"})
        others = []
        if not a.quick:
            # the default environment: pthread OpenBLAS with its own threads next to OpenMP's
            others.append(("mnemo, 2 pools (OPENBLAS_NUM_THREADS=2)", mn_cmd, {"OPENBLAS_NUM_THREADS": "2"}))
            omp_blas = openmp_openblas_dir()
            if omp_blas:
                # Debian's libopenblas0-openmp (OpenBLAS on OpenMP's threads), for this process only
                others.append(("mnemo, OpenMP OpenBLAS", mn_cmd, {"LD_LIBRARY_PATH": omp_blas}))
        targs = cfg_args(c) + ["--threads", "2"]
        py = a.torch_python
        if pypi:
            others.append((f"torch {pypi} eager", [py, bench_torch, "--mode", "eager", "--warmup", "1"] + targs, {}))
            others.append((f"torch {pypi} eager + SDPA", [py, bench_torch, "--mode", "sdpa", "--warmup", "1"] + targs, {}))
            if not a.quick and not a.skip_compile:
                others.append((f"torch {pypi} compile", [py, bench_torch, "--mode", "compile", "--warmup", "2"] + targs, {}))
        if debian:
            others.append((f"torch {debian} eager (Debian)", ["/usr/bin/python3", bench_torch, "--mode", "eager", "--warmup", "1"] + targs, {}))
        mn_steps, rows = [], []
        for spec in others:
            ra, rb, _, _ = paired(r, mnemo, spec, pairs)
            mn_steps += ra
            rows.append((spec[0], med([t for t, _, _ in rb]), med([tb / ta for (ta, _, _), (tb, _, _) in zip(ra, rb)]),
                         med([ta for ta, _, _ in ra])))
        if not others:  # nothing to pair with (no torch, quick): run mnemo alone
            srv = Server(r, *mnemo)
            mn_steps = [srv.step() for _ in range(pairs)]
            srv.close()
        tokens = c["batch"] * c["turns"] * c["turn_tokens"]
        report.append(f"\n**{name}**: V {c['vocab']}, C {c['width']}, H {c['heads']}, {c['layers']}+{c['comp_layers']} layers, "
                      f"{c['slots']} slots; batch {c['batch']} x {c['turns']} turns x {c['turn_tokens']} tokens, bptt {c['bptt']}; "
                      f"{flops_per_token(c) / 1e6:.1f} MFLOP/token "
                      f"({flops_per_token(c) / flops_per_token(CONFIGS['demo']):.2f}x demo); {pairs} pairs per system\n")
        report.append("| system | step s (median) | tokens/s | x mnemo time (median of pairs) | mnemo step s in those pairs |")
        report.append("|---|---|---|---|---|")
        mt = med([t for t, _, _ in mn_steps])
        report.append(f"| mnemo (OPENBLAS_NUM_THREADS=1: one OpenMP pool) | {mt:.3f} | {tokens / mt:.0f} | 1 | |")
        for sname, t, ratio, mt_pair in rows:
            report.append(f"| {sname} | {t:.3f} | {tokens / t:.0f} | {ratio:.2f} | {mt_pair:.3f} |")
        a.results[f"train.{name}.mnemo_tokens_per_s"] = tokens / mt
        for key, label in torch_modes(pypi):
            a.results[f"train.{name}.{key}_over_mnemo"] = next((ratio for sname, _, ratio, _ in rows if sname == label),
                                                             None)
        flops = flops_per_token(c) * tokens
        eff = [flops / t / 1e9 for t, _, _ in mn_steps]
        sg = [g for _, _, g in mn_steps]
        eff_rows.append((name, med(eff), med(sg), med([e / g for e, g in zip(eff, sg)])))
    a.eff_rows = eff_rows


def torch_modes(version):
    """results.json key and report row label of each PyPI torch mode."""
    return [("torch_eager", f"torch {version} eager"), ("torch_sdpa", f"torch {version} eager + SDPA"),
            ("torch_compile", f"torch {version} compile")]


def section_efficiency(r, a, perf, report):
    cfgs = ["quick"] if a.quick else ["demo", "4x"]
    eff_rows = getattr(a, "eff_rows", [])
    for name in cfgs:
        row = next((x for x in eff_rows if x[0] == name), None)
        a.results[f"efficiency.{name}"] = row[3] if row else None
        a.results[f"efficiency.{name}.effective_gflops"] = row[1] if row else None
        a.results[f"efficiency.{name}.sgemm_gflops"] = row[2] if row else None
    report.append("\n## 3. CPU efficiency\n")
    if eff_rows:
        report.append("mnemo, from the training steps of section 1; sgemm measured in the same process right "
                      "after each step (mn_sgemm, the entry point the ops use):\n")
        report.append("| config | effective training GFLOP/s | sgemm GFLOP/s (B*S x C x 4C, same process) | ratio |")
        report.append("|---|---|---|---|")
        for name, eff, sg, ratio in eff_rows:
            report.append(f"| {name} | {eff:.1f} | {sg:.1f} | {ratio:.2f} |")
    if a.baseline:
        # the ops before this work (a mnemo_perf linked against them), each paired with mnemo now
        c = CONFIGS[cfgs[0]]
        pairs = 2 if a.quick else 4
        tokens = c["batch"] * c["turns"] * c["turn_tokens"]
        flops = flops_per_token(c) * tokens
        now = ("mnemo", [perf, "train"] + cfg_args(c) + ["--warmup", "1"], {"OPENBLAS_NUM_THREADS": "1"})
        rows = []
        for label, env, unset in (("before, default environment (2 pools, OMP_WAIT_POLICY unset)", {}, ("OMP_WAIT_POLICY",)),
                                  ("before, OMP_WAIT_POLICY=passive (2 pools)", {}, ())):
            old = (label, [a.baseline, "train"] + cfg_args(c) + ["--warmup", "1"], env, unset)
            ra, rb, _, _ = paired(r, now, old, pairs)
            rows.append((label, rb, ra))
        report.append(f"\nBefore/after on {cfgs[0]} ({pairs} alternating pairs each; 'before' = {a.baseline}):\n")
        report.append("| build, environment | step s | effective GFLOP/s | effective / sgemm | after's speed-up in the same pairs |")
        report.append("|---|---|---|---|---|")
        for label, old, new_ in rows:
            t = med([x for x, _, _ in old])
            report.append(f"| {label} | {t:.3f} | {flops / t / 1e9:.1f} | {med([flops / x / 1e9 / g for x, _, g in old]):.2f} | "
                          f"{med([o[0] / n[0] for o, n in zip(old, new_)]):.2f}x |")
        t = med([x for _, _, new_ in rows for x, _, _ in new_])
        all_new = [x for _, _, new_ in rows for x in new_]
        report.append(f"| after (this tree), OPENBLAS_NUM_THREADS=1, passive | {t:.3f} | {flops / t / 1e9:.1f} | "
                      f"{med([flops / x / 1e9 / g for x, _, g in all_new]):.2f} | |")


def section_turns(r, a, perf, report):
    if a.quick:
        c, turns, points, rounds = CONFIGS["quick"], 64, "1,8,64", 2
    else:
        c, turns, points, rounds = CONFIGS["demo"], a.turns, ",".join(str(2 ** i) for i in range(13)), 10
        points = ",".join(p for p in points.split(",") if int(p) <= turns)
    tsv = os.path.join(r.out_dir, "turns.tsv")
    model = [x for k in ("vocab", "width", "heads", "layers", "comp_layers", "slots", "max_turn", "turn_tokens")
             for x in ("--" + k.replace("_", "-"), str(c[k]))]
    out = r.run("turns", [perf, "turns"] + model + ["--turns", str(turns), "--points", points, "--rounds", str(rounds),
                                                    "--tsv", tsv], {"OPENBLAS_NUM_THREADS": "1"})
    rows = re.findall(r"point turn (\d+) mnemo_s (\S+) kv_s (\S+) mnemo_state_bytes (\d+) kv_cache_bytes (\d+) "
                      r"paired_ratio (\S+)", out)
    rows = [(int(t), float(m), float(k), int(mb), int(kb), float(pr)) for t, m, k, mb, kb, pr in rows]
    chain = {int(t): float(s) for t, s in re.findall(r"chain_window turn (\d+) median_s (\S+)", out)}
    first = rows[0]
    report.append("\n## 2. Inference cost against conversation length (one session, turns of "
                  f"{c['turn_tokens']} tokens, {c['vocab']}-token vocabulary, demo widths)\n" if not a.quick else
                  "\n## 2. Inference cost against conversation length (quick config)\n")
    report.append("Per-turn cost = decode the turn (logits of its tokens) + fold it into the state. mnemo: "
                  "mn_logits + mn_update. KV baseline: the same decoder (mnemo's weights and CPU ops) attending "
                  f"over a KV cache of every previous turn (its attention is checked against the ops' attention "
                  f"first). mnemo: {4 * rounds} rounds; in each, every turn count is timed right next to turn 1 "
                  "(their order swapping every round), and 'paired / turn 1' is the median over rounds of those "
                  "ratios, the flatness figure, robust to the load changing during the run. KV cache: medians of "
                  f"{rounds} rounds. 'chain' = median of the 16 turns up to that turn in one continuous session "
                  "of mnemo.\n")
    report.append("| turn | mnemo ms | mnemo paired / turn 1 | mnemo chain ms | KV-cache ms | KV / turn 1 | KV / mnemo | mnemo bytes/session | KV bytes/session |")
    report.append("|---|---|---|---|---|---|---|---|---|")
    show = {1, 64, 512, 4096} if not a.quick else {int(p) for p in points.split(",")}
    for t, m, k, mb, kb, pr in rows:
        if t in show:
            report.append(f"| {t} | {m * 1e3:.2f} | {pr:.3f} | {chain.get(t, float('nan')) * 1e3:.2f} | "
                          f"{k * 1e3:.1f} | {k / first[2]:.1f} | {k / m:.1f} | {mb} | {kb} |")
    last = rows[-1]
    a.results["turns.last_over_first_paired"] = last[5]
    a.results["turns.last_turn"] = last[0]
    verdict = ("quick run: not evaluated" if a.quick else
               "met" if abs(last[5] - 1) <= 0.05 else "NOT met")
    report.append(f"\nmnemo at turn {last[0]} / turn 1 (paired): {last[5]:.3f} "
                  f"(goal: within 5%: {verdict}); ratio of the medians: {last[1] / first[1]:.3f}; "
                  f"chain window: {chain.get(last[0], float('nan')) / chain.get(1, float('nan')):.3f}.\n")
    with open(os.path.join(r.out_dir, "points.tsv"), "w") as f:
        f.write("# turn\tmnemo_s\tkv_s\tmnemo_bytes\tkv_bytes\tmnemo_paired_ratio\n")
        for row in rows:
            f.write("\t".join(str(x) for x in row) + "\n")
    if shutil.which("gnuplot"):
        png = os.path.join(r.out_dir, "turns.png")
        script = f"""
set terminal pngcairo size 1000,420 font ',10'
set output '{png}'
set multiplot layout 1,2
set logscale x 2
set logscale y
set grid
set key top left
set xlabel 'turn'
set ylabel 'ms per turn (decode turn + update)'
set title 'Per-turn cost'
plot '{tsv}' using 1:($2*1000) with points pt 7 ps 0.2 lc rgb '#9ecae1' title 'mnemo, every turn of one session', \\
     '{r.out_dir}/points.tsv' using 1:($2*1000) with linespoints pt 7 lw 2 lc rgb '#08519c' title 'mnemo (median)', \\
     '' using 1:($3*1000) with linespoints pt 5 lw 2 lc rgb '#cb181d' title 'KV cache over all turns (median)'
set ylabel 'bytes per session'
set title 'Session memory'
plot '{r.out_dir}/points.tsv' using 1:4 with linespoints pt 7 lw 2 lc rgb '#08519c' title 'mnemo state (k x C floats)', \\
     '' using 1:5 with linespoints pt 5 lw 2 lc rgb '#cb181d' title 'KV cache'
unset multiplot
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        report.append(f"Plot: {png}\n")


def section_blas(r, a, perf, report):
    c = CONFIGS["quick" if a.quick else "demo"]
    flags = open("/proc/cpuinfo").read()
    avx512 = sorted(set(re.findall(r"\bavx512\w*", flags)))
    coretype = os.environ.get("OPENBLAS_CORETYPE", "Haswell")
    pairs = 2 if a.quick else 4
    cmd = [perf, "train"] + cfg_args(c) + ["--warmup", "1"]
    spec_a = (f"mnemo OPENBLAS_CORETYPE={coretype}", cmd, {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": coretype})
    spec_b = ("mnemo OPENBLAS_CORETYPE unset", cmd, {"OPENBLAS_NUM_THREADS": "1"}, ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    ra, rb, wa, wb = paired(r, spec_a, spec_b, pairs)
    la = wa + [l for _, l, _ in ra]
    lb = wb + [l for _, l, _ in rb]
    worst = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
    core = re.findall(r"^blas (\S+)", r.log_text(), re.M)
    core_a, core_b = (core[-2], core[-1]) if len(core) >= 2 else ("?", "?")
    report.append("\n## 4. BLAS kernels\n")
    report.append(f"CPU AVX-512 flags: {', '.join(avx512) if avx512 else 'none (this CPU has no AVX-512; unsetting OPENBLAS_CORETYPE selects the auto-detected kernels)'}.\n")
    report.append("| OpenBLAS environment | kernels (openblas_get_corename) | step s (median) | losses (warm-up, then each step) |")
    report.append("|---|---|---|---|")
    report.append(f"| OPENBLAS_CORETYPE={coretype} | {core_a} | {med([t for t, _, _ in ra]):.3f} | {', '.join(f'{x:.7f}' for x in la)} |")
    report.append(f"| OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset | {core_b} | {med([t for t, _, _ in rb]):.3f} | {', '.join(f'{x:.7f}' for x in lb)} |")
    ok = worst <= 1e-5
    ratio = med([tb / ta for (ta, _, _), (tb, _, _) in zip(ra, rb)])
    a.results["blas.losses_max_rel_diff"] = worst
    a.results["blas.unset_over_set"] = ratio
    report.append(f"\nLosses agree to {worst:.1e} relative (check: <= 1e-5: {'pass' if ok else 'FAIL'}); "
                  f"step time unset / as set: {ratio:.2f} (median of {pairs} alternating pairs).\n")
    if not ok:
        raise RuntimeError("BLAS kernels disagree beyond 1e-5")


def section_memory(r, a, perf, report):
    c = CONFIGS["quick" if a.quick else "demo"]
    n_sessions = 100 if a.quick else 10000
    out = r.run("memory train", [perf, "train"] + cfg_args(c) + ["--steps", "1", "--warmup", "0"],
                {"OPENBLAS_NUM_THREADS": "1"}, time_v=True)
    train_rss = max_rss_kib(out)
    model = [x for k in ("vocab", "width", "heads", "layers", "comp_layers", "slots", "max_turn", "turn_tokens")
             for x in ("--" + k.replace("_", "-"), str(c[k]))]
    store = os.path.join(r.out_dir, "sessions.h5")
    for f in (store, store + ".journal", store + ".lock"):
        if os.path.exists(f):
            os.remove(f)
    out2 = r.run("memory sessions", [perf, "sessions"] + model + ["--sessions", str(n_sessions), "--store", store],
                 {"OPENBLAS_NUM_THREADS": "1"}, time_v=True)
    sess_rss = max_rss_kib(out2)
    store_bytes = field(out2, "store_bytes", int)
    per = field(out2, "per_update_ms")
    a.results["memory.train_peak_rss_mib"] = train_rss / 1024
    a.results["memory.sessions_peak_rss_mib"] = sess_rss / 1024
    report.append("\n## 5. Memory (peak RSS from /usr/bin/time -v)\n")
    report.append("| run | peak RSS MiB | notes |")
    report.append("|---|---|---|")
    report.append(f"| training, {'quick' if a.quick else 'demo'} config, batch {c['batch']} x {c['turns']} turns, bptt {c['bptt']} | "
                  f"{train_rss / 1024:.0f} | one forward+backward+AdamW step |")
    report.append(f"| update of a {n_sessions}-session HDF5 store (get 64 states, mn_update_batch, put; one "
                  f"{c['turn_tokens']}-token turn each) | {sess_rss / 1024:.0f} | store files {store_bytes / 2**20:.1f} MiB, "
                  f"{per:.2f} ms per session |")
    pypi = None if (a.skip_torch or a.quick) else torch_available(a.torch_python)
    if pypi:
        bench_torch = os.path.join(ROOT, "scripts", "reference", "bench_torch.py")
        out3 = r.run("memory torch train", [a.torch_python, bench_torch, "--mode", "eager", "--warmup", "0", "--steps", "1"] + cfg_args(c),
                     {}, time_v=True)
        report.append(f"| torch {pypi} eager training, same config | {max_rss_kib(out3) / 1024:.0f} | for comparison |")

# ------------------------------------------------------------------ real dialogue
def batch_real_tokens(path):
    """Real (unpadded) tokens of each batch in a `mnemo_perf batches` file."""
    return [sum(lengths) for _, lengths in read_batches(path)[3]]


def batch_per_turn_padded(path):
    """Token positions of a file's batches with each turn padded to its own longest episode (the
    layout mnemo's attention runs on; its other work is packed: real tokens only)."""
    B, T, _, batches = read_batches(path)
    return sum(B * max(lengths[t * B:(t + 1) * B]) for _, lengths in batches for t in range(T))


def real_dialogue_data(r, a, c):
    """The self-dialogue training shard as the demo builds it (prepare, episodes of 6 turns with
    one template probe, a BPE tokenizer trained on the dialogues), but with whole turns: up to
    max_turn tokens, not cut into 24-token pieces. Built once into OUT/real-dialogue and reused
    by later runs; --quick uses the first 200 dialogues. Returns (tokenizer, shard) or None."""
    corpus = os.path.join(a.data, "self_dialogue_corpus")
    if not os.path.isdir(corpus):
        return None
    d = os.path.join(r.out_dir, "real-dialogue")
    os.makedirs(d, exist_ok=True)
    mn = a.mnemo
    dialogues = os.path.join(d, "train.jsonl")
    if not os.path.exists(dialogues):
        r.run("real-dialogue prepare", [mn, "prepare", "--format", "self-dialogue", "--input", corpus, "--split", "train",
                                        "--jsonl", dialogues + ".part"])
        if a.quick:
            with open(dialogues + ".part") as f, open(dialogues + ".head", "w") as g:
                for i, line in enumerate(f):
                    if i == 200:
                        break
                    g.write(line)
            os.replace(dialogues + ".head", dialogues + ".part")
        os.replace(dialogues + ".part", dialogues)
    episodes = os.path.join(d, "train-episodes.jsonl")
    if not os.path.exists(episodes):
        r.run("real-dialogue episodes", [mn, "episodes", "--jsonl", dialogues, "--split", "train", "--turns", "6",
                                         "--distances", "1-3", "--probes-per-episode", "1", "--facts", "templates",
                                         "--open-values", "1000" if a.quick else "100000", "--seed", "3",
                                         "-o", episodes])
    tok = os.path.join(d, f"tok-{c['vocab']}.h5")
    if not os.path.exists(tok):
        r.run("real-dialogue tokenizer", [mn, "tokenizer", "--train", "--jsonl", dialogues, "--vocab-size",
                                          str(c["vocab"]), "-o", tok])
    shard = os.path.join(d, f"train-{c['vocab']}-{c['max_turn']}.shard")
    if not os.path.exists(shard):
        r.run("real-dialogue shard", [mn, "shard", "--tokenizer", tok, "--jsonl", episodes, "--max-turn-tokens",
                                      str(c["max_turn"]), "-o", shard])
    return tok, shard


def section_real(r, a, perf, report):
    c = dict(CONFIGS["quick" if a.quick else "demo"])
    for k in RESULT_KEYS["real"]:
        a.results[k] = None
    report.append("\n## 6. Training on real dialogue (whole turns of the self-dialogue training shard)\n")
    built = real_dialogue_data(r, a, c)
    if not built:
        report.append(f"Skipped: no {os.path.join(a.data, 'self_dialogue_corpus')} (--data).\n")
        return
    tok, shard = built
    n_batches = 2 if a.quick else max(2, a.pairs)  # each batch once per pairing
    batches = os.path.join(r.out_dir, "real-dialogue", f"batches-{c['vocab']}-{c['max_turn']}-{c['batch']}x{c['turns']}.bin")
    model = cfg_args(c)
    out = r.run("real-dialogue batches", [perf, "batches"] + model + ["--shard", shard, "--tokenizer", tok,
                                                                       "--n-batches", str(n_batches), "--batches", batches])
    real_total, padded_max, padded_longest = (field(out, k, int) for k in ("real_tokens", "padded_to_max",
                                                                             "padded_to_longest"))
    real = batch_real_tokens(batches)
    padded_per_turn = batch_per_turn_padded(batches)
    pairs = n_batches
    pypi = None if a.skip_torch else torch_available(a.torch_python)
    bench_torch = os.path.join(ROOT, "scripts", "reference", "bench_torch.py")
    mnemo = ("mnemo", [perf, "train"] + model + ["--batches", batches, "--warmup", "1"], {"OPENBLAS_NUM_THREADS": "1"})
    targs = model + ["--threads", "2", "--batches", batches]
    # mnemo with each batch cut to its longest turn, as torch gets it
    others = [("mnemo, each batch cut to its longest turn", mnemo[1] + ["--trim"], {"OPENBLAS_NUM_THREADS": "1"})]
    if pypi:
        py = a.torch_python
        others.append((f"torch {pypi} eager", [py, bench_torch, "--mode", "eager", "--warmup", "1"] + targs, {}))
        others.append((f"torch {pypi} eager + SDPA", [py, bench_torch, "--mode", "sdpa", "--warmup", "1"] + targs, {}))
        if not a.quick and not a.skip_compile:
            # every batch once in the warm-up: each new turn length may compile again
            others.append((f"torch {pypi} compile", [py, bench_torch, "--mode", "compile", "--warmup",
                                                     str(n_batches)] + targs, {}))
    mn_steps, rows = [], []
    for spec in others:
        cpu = []
        ra, rb, _, _ = paired(r, mnemo, spec, pairs, cpu)
        mn_steps += [(i, x) for i, x in enumerate(ra)]
        toks = sum(real[i % n_batches] for i in range(len(rb)))
        rows.append((spec[0], toks / sum(t for t, _, _ in rb), med([tb / ta for (ta, _, _), (tb, _, _) in zip(ra, rb)]),
                     med([ta for ta, _, _ in ra]), cpu_ratio(cpu), med([ca for ca, _ in cpu])))
    mn_tps = sum(real[i % n_batches] for i, _ in mn_steps) / sum(x[0] for _, x in mn_steps)
    report.append(f"PyPI torch ({a.torch_python}): {pypi or 'not installed'}. Model: the {'quick' if a.quick else 'demo'} "
                  f"config (V {c['vocab']}, C {c['width']}, {c['layers']}+{c['comp_layers']} layers, {c['slots']} slots, "
                  f"max_turn {c['max_turn']}); {n_batches} batches of {c['batch']} episodes x {c['turns']} turns "
                  f"drawn by `mnemo train`'s loader from the shard (`mnemo_perf batches`), bptt {c['bptt']}; step i of "
                  f"each system trains on batch i mod {n_batches}, paired step by step as in section 1 ({pairs} pairs). "
                  "mnemo gets the batches as `mnemo train` does (every turn padded to max_turn; the row 'cut to its "
                  "longest turn' gets them as torch does) and packs them: its layer norms, products and GELU run on "
                  "each turn's real tokens and memory slots only, its attention per episode over its own length; "
                  "torch gets each batch padded to its longest turn, as a "
                  "PyTorch user would write it. tokens/s counts real tokens only.\n")
    report.append(f"Real tokens: {real_total} of {padded_max} positions in mnemo's batches "
                  f"({100.0 * real_total / padded_max:.1f}%), of {padded_longest} padded to each batch's longest turn "
                  f"({100.0 * real_total / padded_longest:.1f}%), of {padded_per_turn} padded to each turn's longest "
                  f"episode ({100.0 * real_total / padded_per_turn:.1f}%, the layout of mnemo's attention); mnemo's "
                  "other work runs on the real tokens only (100%).\n")
    report.append("| system | real tokens/s | x mnemo time (median of pairs) | mnemo step s in those pairs "
                  "| x mnemo CPU time (median of pairs) | mnemo CPU s |")
    report.append("|---|---|---|---|---|---|")
    report.append(f"| mnemo (batches as `mnemo train` gives them) | {mn_tps:.0f} | 1 | | 1 | |")
    for sname, tps, ratio, mt_pair, cpu_x, mt_cpu in rows:
        cpu_text = "n/a" if cpu_x is None else f"{cpu_x:.2f}"
        report.append(f"| {sname} | {tps:.0f} | {ratio:.2f} | {mt_pair:.3f} | {cpu_text} | {mt_cpu:.3f} |")
    a.results["train.real_dialogue.mnemo_tokens_per_s"] = mn_tps
    a.results["train.real_dialogue.mnemo_cut_to_longest_over_mnemo"] = rows[0][2]
    a.results["train.real_dialogue.real_share_mnemo_positions"] = real_total / padded_max
    a.results["train.real_dialogue.real_share_padded_to_longest"] = real_total / padded_longest
    a.results["train.real_dialogue.real_share_padded_per_turn"] = real_total / padded_per_turn
    for key, label in torch_modes(pypi):
        a.results[f"train.real_dialogue.{key}_over_mnemo"] = next((x[2] for x in rows if x[0] == label), None)
        a.results[f"train.real_dialogue.{key}_over_mnemo_cpu"] = next((x[4] for x in rows if x[0] == label), None)
    if not a.quick and a.results["train.real_dialogue.torch_eager_over_mnemo"] is not None:
        e = a.results["train.real_dialogue.torch_eager_over_mnemo"]
        cmp_ = a.results["train.real_dialogue.torch_compile_over_mnemo"]
        report.append(f"\nGoal (issue 16): torch eager / mnemo >= 2.0: {e:.2f} ({'met' if e >= 2.0 else 'NOT met'}); "
                      f"torch.compile / mnemo >= 1.5: "
                      f"{'n/a' if cmp_ is None else f'{cmp_:.2f} (' + ('met' if cmp_ >= 1.5 else 'NOT met') + ')'} "
                      "(wall time, paired medians; the CPU-time ratios in the table count the work alone).\n")

# ------------------------------------------------------------------ evaluation
def timed_child(r, name, cmd):
    """Runs cmd; returns (wall seconds, CPU seconds of the child)."""
    before = os.times()
    t0 = time.time()
    r.run(name, cmd)
    after = os.times()
    return time.time() - t0, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def section_eval(r, a, perf, report):
    """`mnemo eval` (all modes, generation and LM on, 2 threads) on the demo's kind of test probes:
    template probes in 6-turn episodes of Topical-Chat test dialogues, with a model of the demo's
    shape trained 2 steps on the real-dialogue shard (an untrained model generates up to the
    budget, more than a trained one: probes/s is a lower bound for the demo's checkpoint).
    With --eval-baseline OLD_MNEMO, the same evaluation by an older CLI, alternating with this
    one; the figure is the median of the paired wall-time ratios."""
    for k in RESULT_KEYS["eval"]:
        a.results[k] = None
    report.append("\n## 7. Evaluation speed (`mnemo eval`, the demo's kind of test probes)\n")
    c = dict(CONFIGS["quick" if a.quick else "demo"])
    built = real_dialogue_data(r, a, c)
    topical = os.path.join(a.data, "topical_chat")
    if not built or not os.path.isdir(topical):
        report.append(f"Skipped: no self_dialogue_corpus or topical_chat in {a.data} (--data).\n")
        return
    tok, shard = built
    d = os.path.join(r.out_dir, "real-dialogue")
    test = os.path.join(d, "test.jsonl")
    if not os.path.exists(test):
        r.run("eval prepare", [a.mnemo, "prepare", "--format", "topical-chat", "--input", topical, "--split", "test",
                               "--jsonl", test + ".part"])
        os.replace(test + ".part", test)
    probes = os.path.join(d, "test-episodes.jsonl")
    if not os.path.exists(probes):
        r.run("eval episodes", [a.mnemo, "episodes", "--jsonl", test, "--split", "test", "--turns", "6", "--distances",
                                "1-3", "--probes-per-episode", "1", "--facts", "templates", "--families", "shared",
                                "--seed", "3", "-o", probes])
    run = os.path.join(d, f"eval-model-{c['vocab']}-{c['max_turn']}")
    ckpt = os.path.join(run, "ckpt-00000002.h5")
    if not os.path.exists(ckpt):
        shutil.rmtree(run, ignore_errors=True)
        r.run("eval model", [a.mnemo, "train", "--config", os.path.join(ROOT, "train", "recipes", "demo.json"),
                             "--train-data", shard, "--tokenizer", tok, "--vocab-size", str(c["vocab"]),
                             "--max-turn-tokens", str(c["max_turn"]), "--steps", "2", "--threads", "2", "--seed", "1",
                             "--run-dir", run])
    n_probes = 20 if a.quick else 600
    rounds = 1 if a.quick else 3
    systems = [("this", a.mnemo)] + ([("baseline", a.eval_baseline)] if a.eval_baseline else [])
    times = {name: [] for name, _ in systems}
    for i in range(rounds):
        for name, mn in (systems if i % 2 == 0 else systems[::-1]):
            out = os.path.join(r.out_dir, f"eval-{name}.json")
            protocol = ["--question-in-state"] if name == "this" and a.eval_question_in_state else []
            wall, cpu = timed_child(r, f"eval {name}", [mn, "eval", "--checkpoint", ckpt, "--data", probes, "--json", out,
                                                        "--max-probes", str(n_probes), "--threads", "2", "--quiet"]
                                    + protocol)
            got = json.load(open(out))
            times[name].append((got["rate"]["wall_s"], wall, cpu, got["probes"]))
    this = times["this"]
    a.results["eval.probes_per_s"] = med([p / w for w, _, _, p in this])
    a.results["eval.probes_per_cpu_s"] = med([p / cpu for _, _, cpu, p in this])
    report.append(f"{n_probes} probes of the Topical-Chat test episodes, every mode, generation and LM on, "
                  f"--threads 2; a model of the demo's shape (train/recipes/demo.json, V {c['vocab']}, max_turn "
                  f"{c['max_turn']}) trained 2 steps on the real-dialogue shard; {rounds} runs each, medians. "
                  "probes/s is the report's own (`rate`, wall time); per CPU second counts the process's user + "
                  "system time, steadier on a shared machine.\n")
    report.append("| mnemo | probes/s | probes per CPU s |")
    report.append("|---|---|---|")
    report.append(f"| this tree | {a.results['eval.probes_per_s']:.1f} | {a.results['eval.probes_per_cpu_s']:.1f} |")
    if a.eval_baseline:
        base = times["baseline"]
        a.results["eval.baseline_time_over_this"] = med([b[0] / t[0] for b, t in zip(base, this)])
        a.results["eval.baseline_cpu_time_over_this"] = med([b[2] / t[2] for b, t in zip(base, this)])
        a.results["eval.baseline_probes_per_s"] = med([p / w for w, _, _, p in base])
        # the same numbers out: the modes whose accuracy, gold log-likelihood and exact match the
        # baseline's report gives alike (before 2026-12-05 memory and no_memory read the question
        # into R: a 616aacb baseline differs there by design, docs/eval.md, unless this tree runs
        # with --eval-question-in-state)
        reports = [json.load(open(os.path.join(r.out_dir, f"eval-{name}.json")))["recall"] for name in ("this", "baseline")]
        same = [m for m in reports[1] if m in reports[0] and all(
            reports[0][m].get(k) == reports[1][m].get(k) for k in ("mc_accuracy", "gold_ll", "exact_match"))]
        a.results["eval.modes_same_as_baseline"] = same
        report.append(f"| baseline ({a.eval_baseline}) | {a.results['eval.baseline_probes_per_s']:.1f} | "
                      f"{med([p / cpu for _, _, cpu, p in base]):.1f} |")
        report.append(f"\nBaseline wall time / this tree's (median of {rounds} alternating pairs): "
                      f"{a.results['eval.baseline_time_over_this']:.2f}; CPU time: "
                      f"{a.results['eval.baseline_cpu_time_over_this']:.2f}. Modes whose mc_accuracy, gold_ll and "
                      f"exact_match equal the baseline's: {', '.join(same) or 'none'} (of {', '.join(reports[1])}; "
                      "a baseline from before 2026-12-05 reads the question into R in memory and no_memory).\n")
        if not a.quick:
            g = a.results["eval.baseline_time_over_this"]
            report.append(f"Goal (issue 16, against the pre-batching CLI of 616aacb as --eval-baseline): >= 4x the "
                          f"probes/s: {g:.2f}x ({'met' if g >= 4.0 else 'NOT met'}; this tree "
                          f"{'with' if a.eval_question_in_state else 'without'} --question-in-state).\n")



def write_results(a, sections):
    """results.json beside results.md; checks that it parses and that each section run wrote its keys."""
    path = os.path.join(a.out, "results.json")
    with open(path + ".part", "w") as f:
        json.dump({"date": time.strftime("%Y-%m-%d %H:%M"), "host": os.uname().nodename, "quick": a.quick,
                   "torch_python": a.torch_python, "figures": a.results}, f, indent=1, sort_keys=True)
    os.replace(path + ".part", path)
    figures = json.load(open(path))["figures"]
    cfgs = ["quick"] if a.quick else ["demo", "4x"]
    missing = [k.format(cfg=cfg) for s in sections for k in RESULT_KEYS.get(s, []) for cfg in cfgs
               if k.format(cfg=cfg) not in figures]
    if missing:
        raise RuntimeError(f"{path}: keys missing: {', '.join(sorted(set(missing)))}")
    return path



def main():
    ap = argparse.ArgumentParser(description="issue 7 benchmark (run via scripts/bench)")
    ap.add_argument("--mnemo-perf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="tiny configs, one round, no timing assertions")
    ap.add_argument("--pairs", type=int, default=6, help="alternating step pairs per system (demo; 4x: 2/3 of it)")
    ap.add_argument("--turns", type=int, default=4096)
    ap.add_argument("--sections", default="train,turns,efficiency,blas,memory,real,eval")
    ap.add_argument("--eval-baseline", help="an older mnemo CLI, for the evaluation's before/after")
    ap.add_argument("--eval-question-in-state", action="store_true",
                    help="this tree's evaluation reads the question into R (--question-in-state), the protocol "
                         "of CLIs from before 2026-12-05, so that its numbers can equal such a baseline's")
    ap.add_argument("--mnemo", required=True, help="the mnemo CLI (prepare, episodes, tokenizer, shard)")
    ap.add_argument("--data", default=os.environ.get("MNEMO_DATA", os.path.join(ROOT, "..", "shared", "data")),
                    help="the datasets (self_dialogue_corpus) for the real-dialogue section")
    ap.add_argument("--torch-python", default=os.environ.get("MNEMO_BENCH_TORCH_PYTHON", "python3"),
                    help="the interpreter with PyPI's torch (default python3 on PATH)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--baseline", help="a mnemo_perf built from older ops, for the before/after row")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "bench.log"), "w")
    r = Runner(a.out, log)
    a.results = {}
    report = [f"# mnemo benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.uname().nodename}, "
              f"{os.cpu_count()} CPUs, load at start {open('/proc/loadavg').read().split()[0]})\n"]
    sections = a.sections.split(",")
    t0 = time.time()
    done = []
    for s, fn in (("train", section_train), ("turns", section_turns), ("efficiency", section_efficiency),
                  ("blas", section_blas), ("memory", section_memory), ("real", section_real),
                  ("eval", section_eval)):
        if s in sections:
            fn(r, a, a.mnemo_perf, report)
            done.append(s)
            print(f"[bench] {fn.__name__[8:]} done after {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            # written after every section, so that a run stopped later keeps what it measured
            open(os.path.join(a.out, "results.md"), "w").write("\n".join(report) + "\n")
            write_results(a, done)
    text = "\n".join(report) + "\n"
    open(os.path.join(a.out, "results.md"), "w").write(text)
    print(text)
    print(f"(raw output: {a.out}/bench.log; load averages: {a.out}/loadavg.log; figures: {write_results(a, done)})")


if __name__ == "__main__":
    main()
