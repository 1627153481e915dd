"""The model and tokenizer API against the C library's own results, and bad input."""
import numpy as np
import pytest

import mnemo
from conftest import CHAT_CKPT


def test_load_gives_model_and_tokenizer(chat):
    model, tok = chat
    assert isinstance(model, mnemo.Model) and isinstance(tok, mnemo.Tokenizer)
    assert model.tokenizer is tok
    assert model.state_shape == (2, 16) and model.vocab_size == 320 and tok.vocab_size == 320
    assert model.config["max_turn_tokens"] == 24
    assert "fingerprint" in repr(model)


def test_encode_decode_round_trip(chat):
    _, tok = chat
    for text in ["My cat is called Miso.", "Café — 日本語 😀 \t tabs", ""]:
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert tok.decode(ids) == text
    assert tok.decode_bytes(tok.encode(b"\xff\xfe raw")) == b"\xff\xfe raw"
    assert tok.decode([tok.special("<|eot|>")]) == "<|eot|>"


def test_special_tokens_and_turns(chat, gpt2):
    _, tok = chat
    assert tok.has_specials and tok.special("<|nope|>") is None
    turn = tok.encode_turn("hi there", speaker="A", new_session=True)
    assert turn[:3].tolist() == [tok.special("<|session|>"), tok.special("<|turn|>"), tok.special("<|speaker_a|>")]
    assert turn[-1] == tok.special("<|eot|>") and tok.decode(turn[3:-1]) == "hi there"
    assert tok.reply_prefix().tolist() == [tok.special("<|turn|>"), tok.special("<|speaker_b|>")]
    assert tok.stop_tokens().tolist() == [tok.special("<|eot|>")]
    _, gtok = gpt2   # GPT-2's tokenizer: no specials, turns as plain text
    assert not gtok.has_specials and gtok.special("<|eot|>") is None
    assert gtok.decode(gtok.encode_turn("hi", speaker="B")) == "B: hi\n"
    assert all(b"\n" in gtok.token_bytes(t) or gtok.token_bytes(t) == b"<|endoftext|>" for t in gtok.stop_tokens())
    with pytest.raises(mnemo.Error, match="speaker"):
        tok.encode_turn("x", speaker="C")


def test_update_is_explicit_state(chat):
    model, tok = chat
    r0 = model.initial_state()
    assert isinstance(r0, mnemo.State) and r0.dtype == np.float32 and r0.shape == (2, 16)
    assert r0.turns == 0 and r0.fingerprint == model.fingerprint
    np.testing.assert_array_equal(r0, model.parameters()["memory.r0"])
    before = r0.copy()
    turn = tok.encode_turn("My cat is called Miso.")
    r1 = model.update(r0, turn)
    np.testing.assert_array_equal(r0, before)           # the input state is not touched
    assert r1.turns == 1 and not np.array_equal(r1, r0)
    np.testing.assert_array_equal(model.update(r0, turn), r1)   # deterministic
    np.testing.assert_array_equal(model.update(np.array(r0), turn.tolist()), r1)  # plain array, list of ints


def test_update_batch_matches_update(chat):
    model, tok = chat
    r0 = model.initial_state()
    turns = [tok.encode_turn("My cat is called Miso."), tok.encode_turn("Oslo", speaker="B"), tok.encode("a")]
    states = np.stack([r0, model.update(r0, turns[0]), r0])
    out = model.update_batch(states, turns)
    assert out.shape == (3, 2, 16)
    for i in range(3):
        np.testing.assert_allclose(out[i], model.update(states[i], turns[i]), rtol=1e-5, atol=1e-6)


def test_logits_and_generate(chat):
    model, tok = chat
    state = model.update(model.initial_state(), tok.encode_turn("My cat is called Miso."))
    prompt = tok.reply_prefix()
    logits = model.logits(state, prompt)
    assert logits.shape == (2, 320) and logits.dtype == np.float32
    assert not np.array_equal(logits, model.logits(model.initial_state(), prompt))   # memory matters
    assert model.logits(None, prompt).shape == (2, 320)
    out = model.generate(state, prompt, max_tokens=8)
    assert out.dtype == np.int32 and 3 <= len(out) <= 8
    assert out[:2].tolist() == prompt.tolist()           # the whole turn, prompt included
    assert out[2] == np.argmax(logits[-1])               # greedy: the first pick is the argmax
    if len(out) < 8:
        assert out[-1] == tok.special("<|eot|>")
    assert "<|" not in tok.decode(out, skip_special=True)
    assert tok.decode(tok.encode_turn("hi there", new_session=True), skip_special=True) == "hi there"
    np.testing.assert_array_equal(model.update(state, out), model.update(state, out.tolist()))
    sampled = [model.generate(state, prompt, max_tokens=8, temperature=1.0, seed=s).tolist() for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]                      # same seed, same draw


def test_parameters_are_views(tmp_path):
    model, tok = mnemo.load(CHAT_CKPT)   # its own copy: the test changes it
    params = model.parameters()
    r0 = params["memory.r0"]
    r0[0, 0] += 1.0
    assert model.initial_state()[0, 0] == r0[0, 0]
    del model
    assert np.isfinite(params["wte"]).all()              # the views keep the model alive


def test_bad_input_raises_clear_errors(chat, other_gpt2, gpt2):
    model, tok = chat
    r0 = model.initial_state()
    turn = tok.encode_turn("hello")
    with pytest.raises(mnemo.Error, match="float32"):
        model.update(r0.astype(np.float64), turn)
    with pytest.raises(mnemo.Error, match=r"shape \(k, C\) = \(2, 16\)"):
        model.update(np.zeros((3, 16), np.float32), turn)
    with pytest.raises(mnemo.Error, match="int32"):
        model.update(r0, turn.astype(np.int64))
    with pytest.raises(mnemo.Error, match="1-D"):
        model.logits(r0, turn.reshape(1, -1))
    with pytest.raises(mnemo.Error, match="ints"):
        model.update(r0, ["a", "b"])
    with pytest.raises(mnemo.Error) as e:             # the C library's own check and message
        model.update(r0, np.empty(0, np.int32))
    assert e.value.status == "MN_ERR_INVALID_ARG" and str(e.value)
    with pytest.raises(mnemo.Error) as e:
        model.logits(r0, np.array([0, 320], np.int32))
    assert e.value.status == "MN_ERR_INVALID_ARG" and "320" in str(e.value)
    with pytest.raises(mnemo.Error) as e:
        model.update(r0, np.zeros(25, np.int32))      # longer than N = 24
    assert "24" in str(e.value)
    # another compressor's state: same shape, other fingerprint
    gmodel, _ = gpt2
    theirs = other_gpt2[0].initial_state()
    assert theirs.shape == gmodel.state_shape
    with pytest.raises(mnemo.Error, match="another compressor") as e:
        gmodel.update(theirs, [1, 2, 3])
    assert e.value.status == "MN_ERR_MISMATCH"
    with pytest.raises(mnemo.Error, match="another compressor"):
        gmodel.logits(theirs, [1, 2, 3])
    with pytest.raises(mnemo.Error, match="another compressor"):
        gmodel.update_batch(theirs[None], [[1]])   # a State's slices keep its fingerprint
    with pytest.raises(mnemo.Error, match="2 states but 1 turns"):
        model.update_batch(np.stack([r0, r0]), [turn])
    with pytest.raises(mnemo.Error, match="max_tokens"):
        model.generate(r0, tok.reply_prefix(), max_tokens=1)
    with pytest.raises(mnemo.Error, match="outside"):
        tok.token_bytes(10**6)


def test_missing_and_broken_files(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(mnemo.Error) as e:
        mnemo.load(missing)
    assert e.value.status == "MN_ERR_IO" and "nope.h5" in str(e.value)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(mnemo.Error) as e:
        mnemo.load(str(junk))
    assert "junk.h5" in str(e.value)


def test_help_is_useful():
    import pydoc
    text = pydoc.render_doc(mnemo, renderer=pydoc.plaintext)
    for name in ["load", "evaluate", "SessionStore", "update_batch", "State", "Error", "hf"]:
        assert name in text
    assert mnemo.Model.update.__doc__ and mnemo.hf.prefix_embeds.__doc__
