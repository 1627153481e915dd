#!/usr/bin/python3
"""Groups a `perf report --no-children --sort dso,symbol --stdio` listing (stdin) into the cost
categories docs/perf.md uses, and prints a markdown table (share of all samples).
Usage: perf report -i perf.data --no-children --sort dso,symbol --stdio 2>/dev/null | scripts/perf/perf_groups.py"""
import re
import sys

GROUPS = [
    ("sgemm (OpenBLAS kernels and packing)", r"sgemm_|openblas.*\] 0x"),
    ("OpenMP threads waiting (libgomp spin)", r"libgomp"),
    ("OpenBLAS threads yielding (sched_yield, scheduler)", r"sched_yield|__schedule|do_syscall_64|\bschedule\b|finish_task_switch|pick_next|_raw_spin"),
    ("GELU (incl. libm tanhf/expm1f)", r"gelu|expm1f|tanhf"),
    ("attention (outside sgemm)", r"attention|softmax_row|softmax_backward_row"),
    ("cross-entropy (incl. libm expf/logf)", r"crossentropy|log_sum_exp|scaled_softmax_in_place|add_scaled_softmax|__expf|__logf"),
    ("layernorm", r"layernorm"),
    ("linear bias / bias grad, residual, embedding", r"mn_linear_|mn_residual|mn_embedding"),
    ("memset / memcpy (model buffers)", r"memset|memmove|memcpy"),
    ("AdamW + grad norm", r"adamw|sum_squares"),
    ("model init (RNG, libm cos/log), page faults", r"rng|__cos|__ieee754_log|mn_model_init|page|clear_page|do_anonymous|handle_mm|\blog@"),
]


def main():
    tot = {g: 0.0 for g, _ in GROUPS}
    other = 0.0
    top = []
    for line in sys.stdin:
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        key = f"{dso} {sym}"
        top.append((pct, sym, dso))
        for g, rx in GROUPS:
            if re.search(rx, key):
                tot[g] += pct
                break
        else:
            other += pct
    print("| category | share of samples |")
    print("|---|---|")
    for g, _ in GROUPS:
        print(f"| {g} | {tot[g]:.1f}% |")
    print(f"| other | {other:.1f}% |")
    print()
    print("| top symbols | share | object |")
    print("|---|---|---|")
    for pct, sym, dso in top[:8]:
        print(f"| {sym} | {pct:.1f}% | {dso} |")


if __name__ == "__main__":
    main()
