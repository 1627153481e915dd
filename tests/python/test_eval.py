"""mnemo.evaluate: the report `mnemo eval` writes, as a dict."""
import pytest

import mnemo
from conftest import CHAT_CKPT, DIALOGUES


def test_report_as_dict():
    r = mnemo.evaluate(CHAT_CKPT, DIALOGUES, modes=["memory", "no_memory", "window"], threads=1)
    assert r["dialogues"] == 2 and r["probes"] == 2
    assert set(r["recall"]) == {"memory", "no_memory", "window", "window_8"}   # windows k and 4k
    for mode in r["recall"].values():
        assert mode["n"] == 2 and 0.0 <= mode["mc_accuracy"] <= 1.0
    assert r["cost"]["state_floats"] == 2 * 16
    assert set(r["lm"]) >= {"memory", "no_memory"}


def test_options_reach_the_c_eval():
    r = mnemo.evaluate(CHAT_CKPT, DIALOGUES, modes=["memory"], max_probes=1, generate=True, lm=False)
    assert list(r["recall"]) == ["memory"] and r["probes"] == 1
    assert r["recall"]["memory"]["gen_n"] == 1
    w = mnemo.evaluate(CHAT_CKPT, DIALOGUES, modes=["window"], window_tokens=[3, 5])
    assert {m["window_tokens"] for m in w["recall"].values()} == {3, 5}


def test_bad_input(tmp_path):
    with pytest.raises(mnemo.Error, match="telepathy"):
        mnemo.evaluate(CHAT_CKPT, DIALOGUES, modes=["memory", "telepathy"])
    with pytest.raises(mnemo.Error, match="must be a list"):
        mnemo.evaluate(CHAT_CKPT, DIALOGUES, modes="memory")
    with pytest.raises(mnemo.Error) as e:
        mnemo.evaluate(tmp_path / "missing.h5", DIALOGUES)
    assert e.value.status == "MN_ERR_IO" and "missing.h5" in str(e.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(mnemo.Error, match="bad.jsonl"):
        mnemo.evaluate(CHAT_CKPT, bad)
