"""Shared fixtures of the Python tests (run by scripts/test in its virtual environment, or
`pytest tests/python` wherever the package is installed): the committed checkpoints, and
GPT-2 checkpoints imported from the tiny Hugging Face fixture (tests/fixtures/gpt2_tiny)."""
import os

import pytest

import mnemo

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
GPT2_DIR = os.path.join(FIXTURES, "gpt2_tiny")
CHAT_CKPT = os.path.join(FIXTURES, "python", "tiny_chat.h5")   # mnemo's tokenizer (tests/python/make_fixture.sh)
DIALOGUES = os.path.join(FIXTURES, "python", "dialogues.jsonl")
SLOTS, TURN = 4, 60   # the memory shape of test_gpt2.c's imports: k + N = the fixture's 64 positions


@pytest.fixture(scope="session")
def chat():
    """(model, tokenizer) of the small checkpoint with mnemo's own tokenizer."""
    return mnemo.load(CHAT_CKPT)


@pytest.fixture(scope="session")
def gpt2_ckpt(tmp_path_factory):
    """A checkpoint whose decoder is the HF fixture's GPT-2 (compressor from seed 1)."""
    path = str(tmp_path_factory.mktemp("gpt2") / "base.h5")
    return mnemo.hf.import_gpt2(GPT2_DIR, path, slots=SLOTS, max_turn_tokens=TURN, comp_layers=2, seed=1)


@pytest.fixture(scope="session")
def gpt2(gpt2_ckpt):
    return mnemo.load(gpt2_ckpt)


@pytest.fixture(scope="session")
def other_gpt2(tmp_path_factory):
    """The same decoder with another compressor (seed 2): same state shape, other fingerprint."""
    path = str(tmp_path_factory.mktemp("gpt2-other") / "base.h5")
    mnemo.hf.import_gpt2(GPT2_DIR, path, slots=SLOTS, max_turn_tokens=TURN, comp_layers=2, seed=2)
    return mnemo.load(path)
