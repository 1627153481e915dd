"""The batches file of `mnemo_perf batches` (scripts/perf/mnemo_perf.c), standard library only:
int32 little-endian, header {magic "MNB1", n, B, T, L}, then per batch tokens (T, B, L) and
lengths (T, B). Read by scripts/perf/bench.py (real tokens per batch) and bench_torch.py."""
import array
import sys

MAGIC = 0x31424E4D


def read_batches(path):
    """-> (B, T, L, [(tokens, lengths)]): flat int lists, tokens (T*B*L), lengths (T*B)."""
    data = array.array("i")
    with open(path, "rb") as f:
        data.frombytes(f.read())
    if sys.byteorder != "little":
        data.byteswap()
    if len(data) < 5 or data[0] != MAGIC:
        raise SystemExit(f"{path}: not a batches file (mnemo_perf batches)")
    _, n, B, T, L = data[:5]
    out, at = [], 5
    for _ in range(n):
        tokens = data[at:at + T * B * L]
        at += T * B * L
        out.append((tokens, data[at:at + T * B]))
        at += T * B
    return B, T, L, out
