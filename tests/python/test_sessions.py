"""mnemo.SessionStore as a mapping of session id -> state, over the C session store."""
import numpy as np
import pytest

import mnemo


def test_mapping_put_get_list_delete(chat, tmp_path):
    model, tok = chat
    path = tmp_path / "sessions.h5"
    r1 = model.update(model.initial_state(), tok.encode_turn("My cat is called Miso."))
    r2 = model.update(r1, tok.encode_turn("Lovely name.", speaker="B"))
    with mnemo.SessionStore(path, model) as store:
        assert len(store) == 0 and list(store) == [] and "alice" not in store
        store["alice"] = r1
        store["bob"] = r2
        store.put("carol", model.initial_state(), turns=7)
        assert len(store) == 3 and list(store) == ["alice", "bob", "carol"]
        got = store["bob"]
        np.testing.assert_array_equal(got, r2)
        assert isinstance(got, mnemo.State) and got.turns == 2 and got.fingerprint == model.fingerprint
        infos = store.list()
        assert [i.id for i in infos] == ["alice", "bob", "carol"] and infos[2].turns == 7
        assert infos[0].fingerprint == model.fingerprint and infos[0].created_us > 0
        assert store.get("nobody") is None and store.get_state("nobody") is None
        with pytest.raises(KeyError):
            store["nobody"]
        del store["carol"]
        with pytest.raises(KeyError):
            del store["carol"]
        assert dict(store.items()).keys() == {"alice", "bob"}
        store.compact()
    # a reader sees what the writer put; the state continues where it stopped
    with mnemo.SessionStore(path, readonly=True) as reader:
        assert reader.state_shape == model.state_shape
        back = reader["alice"]
        np.testing.assert_array_equal(back, r1)
        np.testing.assert_array_equal(model.update(back, tok.encode_turn("x")), model.update(r1, tok.encode_turn("x")))
        with pytest.raises(mnemo.Error):
            reader["dave"] = r1                      # a reader cannot write


def test_refusals_lose_nothing(chat, gpt2, other_gpt2, tmp_path):
    model, tok = chat
    gmodel, _ = gpt2
    path = tmp_path / "g.h5"
    store = mnemo.SessionStore(path, gmodel)
    mine = gmodel.update(gmodel.initial_state(), [5, 6, 7])
    store["s"] = mine
    theirs = other_gpt2[0].initial_state()
    with pytest.raises(mnemo.Error, match="another compressor") as e:
        store["s"] = theirs
    assert e.value.status == "MN_ERR_MISMATCH"
    with pytest.raises(mnemo.Error, match="float32"):
        store["s"] = mine.astype(np.float64)
    with pytest.raises(mnemo.Error, match="shape"):
        store["s"] = np.zeros((2, 16), np.float32)
    with pytest.raises(mnemo.Error, match="NaN|finite|Inf"):
        bad = mine.copy()
        bad[0, 0] = np.nan
        store["s"] = bad
    with pytest.raises(mnemo.Error, match="session id"):
        store[3] = mine
    np.testing.assert_array_equal(store["s"], mine)  # still the last good put
    store.close()
    with pytest.raises(mnemo.Error, match="closed"):
        store["s"]
    # the C library's own fingerprint check: a store opened with another compressor
    other = mnemo.SessionStore(path, other_gpt2[0])
    with pytest.raises(mnemo.Error) as e:
        other["s"]
    assert e.value.status == "MN_ERR_MISMATCH"
    other.close()
    # without a model, a plain array does not say which compressor wrote it; a State does
    plain = mnemo.SessionStore(path)
    with pytest.raises(mnemo.Error, match="plain array"):
        plain["t"] = np.array(mine)
    plain["t"] = mine
    np.testing.assert_array_equal(plain["t"], mine)
    plain.close()
    # a store of another shape
    with pytest.raises(mnemo.Error) as e:
        mnemo.SessionStore(path, model)
    assert e.value.status == "MN_ERR_MISMATCH"


def test_missing_store_without_create(tmp_path):
    with pytest.raises(mnemo.Error) as e:
        mnemo.SessionStore(tmp_path / "none.h5", create=False)
    assert "none.h5" in str(e.value)
