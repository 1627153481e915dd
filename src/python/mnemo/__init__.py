"""mnemo: recurrent session memory for language models, from Python.

A thin ctypes binding of libmnemo's public C API (include/mnemo.h); nothing is computed
here. A compressor folds every dialogue turn into a fixed-size session state R (k slots x
C floats); the decoder reads R as k prefix positions instead of the whole history.

    import mnemo
    model, tok = mnemo.load("ckpt.h5")                 # model + tokenizer of a checkpoint
    state = model.initial_state()                      # R_0: a (k, C) float32 array
    state = model.update(state, tok.encode_turn("My cat is called Miso."))
    reply = model.generate(state, tok.reply_prefix())  # the model's turn, as token ids
    print(tok.decode(reply, skip_special=True))

States are numpy float32 arrays of shape (k, C) (``State``, a subclass that remembers the
fingerprint of the compressor that wrote it and the turn count); token ids are int32
arrays (lists of ints are converted). Arrays go to C without copies. Every failure raises
``mnemo.Error`` carrying mnemo's message. See docs/python.md; ``mnemo.hf`` has the
Hugging Face interop (a state as the ``inputs_embeds`` prefix of a transformers GPT-2,
export and import of the decoder).
"""
from __future__ import annotations

import collections.abc
import ctypes
import json
import os
import tempfile
from ctypes import byref, c_int, c_size_t, c_uint64, c_void_p
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _lib
from ._lib import Error, check, lib, path_arg

__all__ = ["Error", "State", "Tokenizer", "Model", "Loaded", "SessionStore", "SessionInfo", "load", "evaluate", "hf"]
__version__ = "0.1.0"

Tokens = Union[np.ndarray, Sequence[int]]
PathLike = Union[str, bytes, os.PathLike]


class State(np.ndarray):
    """A session state R: a float32 numpy array of shape (k, C).

    ``fingerprint`` is that of the compressor that wrote it (``Model.fingerprint``), so a
    state is not fed to another compressor by mistake; ``turns`` counts the turns it holds.
    Any (k, C) float32 array is accepted where a state is expected; only a State carries the
    check.
    """

    fingerprint: Optional[int]
    turns: int

    def __array_finalize__(self, obj) -> None:
        self.fingerprint = getattr(obj, "fingerprint", None)
        self.turns = getattr(obj, "turns", 0)


def _state(array: np.ndarray, fingerprint: int, turns: int) -> State:
    s = array.view(State)
    s.fingerprint = fingerprint
    s.turns = turns
    return s


def _ptr(array: np.ndarray, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def _tokens(tokens: Tokens, what: str = "tokens") -> np.ndarray:
    """int32, 1-D, C-contiguous: an int32 array as it is, a list of ints converted."""
    if isinstance(tokens, np.ndarray):
        if tokens.dtype != np.int32:
            raise Error(f"{what} must be int32 token ids, got dtype {tokens.dtype} (use .astype(np.int32))")
        if tokens.ndim != 1:
            raise Error(f"{what} must be 1-D, got shape {tokens.shape}")
        return np.ascontiguousarray(tokens)
    try:
        array = np.asarray(tokens)
    except (TypeError, ValueError) as e:
        raise Error(f"{what} must be a sequence of token ids: {e}") from None
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise Error(f"{what} must be a flat sequence of ints, got {array.dtype} of shape {array.shape}")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise Error(f"{what}: a token id does not fit in int32")
    return array.astype(np.int32)


_SPECIALS = ("<|pad|>", "<|turn|>", "<|speaker_a|>", "<|speaker_b|>", "<|eot|>", "<|session|>")


class Tokenizer:
    """A checkpoint's tokenizer (docs/tokens.md): mnemo's byte-level BPE or GPT-2's."""

    def __init__(self, handle: int):
        self._h = c_void_p(handle)

    def __del__(self) -> None:
        if getattr(self, "_h", None) and self._h.value:
            lib.mn_tokenizer_free(self._h)
            self._h = None

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return lib.mn_tokenizer_vocab_size(self._h)

    def encode(self, text: Union[str, bytes]) -> np.ndarray:
        """The token ids (int32) of a text (str as UTF-8, or any bytes). Never a special token."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        count = c_size_t(0)
        cap = len(data) + 1  # a byte-level BPE never has more tokens than bytes
        ids = np.empty(cap, dtype=np.int32)
        check(lib.mn_tokenizer_encode_ids(self._h, data, len(data), _ptr(ids, ctypes.c_int32), cap, byref(count)))
        if count.value > cap:
            ids = np.empty(count.value, dtype=np.int32)
            check(lib.mn_tokenizer_encode_ids(self._h, data, len(data), _ptr(ids, ctypes.c_int32), count.value,
                                              byref(count)))
        return ids[: count.value]

    def token_bytes(self, token: int) -> bytes:
        """The bytes of one token (a special token's are its text, e.g. b"<|eot|>")."""
        b = self._bytes_or_none(int(token))
        if b is None:
            raise Error(f"token id {token} is outside 0..{self.vocab_size - 1} or names no token")
        return b

    def decode_bytes(self, tokens: Tokens) -> bytes:
        """The bytes of the tokens, concatenated."""
        return b"".join(self.token_bytes(t) for t in _tokens(tokens).tolist())

    def decode(self, tokens: Tokens, skip_special: bool = False) -> str:
        """The text of the tokens (UTF-8; a character split between tokens becomes U+FFFD);
        ``skip_special`` leaves out the special tokens (<|turn|>, <|eot|>, ...)."""
        ids = _tokens(tokens)
        if skip_special:
            specials = {self.special(t) for t in _SPECIALS} - {None}
            ids = np.array([i for i in ids.tolist() if i not in specials], np.int32)
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def special(self, text: str) -> Optional[int]:
        """Id of a special token ("<|turn|>", "<|speaker_a|>", "<|speaker_b|>", "<|eot|>",
        "<|session|>", "<|pad|>"), or None when this tokenizer has none (GPT-2's)."""
        i = lib.mn_tokenizer_special_id(self._h, text.encode())
        return None if i < 0 else i

    @property
    def has_specials(self) -> bool:
        """Whether turns render with mnemo's special tokens (mnemo's tokenizer) or as plain text (GPT-2's)."""
        return self.special("<|eot|>") is not None

    def encode_turn(self, text: str, speaker: str = "A", new_session: bool = False) -> np.ndarray:
        """A dialogue turn as the model saw turns in training (docs/tokens.md):
        ``[<|session|>] <|turn|> <|speaker_a|> text <|eot|>`` (speaker "B": <|speaker_b|>);
        with GPT-2's tokenizer the plain text ``"A: text\\n"`` as `mnemo chat` writes it."""
        if speaker not in ("A", "B"):
            raise Error(f"speaker must be 'A' (the dialogue's first speaker) or 'B', got {speaker!r}")
        if not self.has_specials:
            return self.encode(("\n" if new_session else "") + f"{speaker}: {text}\n")
        head = [self.special("<|session|>")] if new_session else []
        head += [self.special("<|turn|>"), self.special("<|speaker_a|>" if speaker == "A" else "<|speaker_b|>")]
        return np.concatenate([np.array(head, np.int32), self.encode(text),
                               np.array([self.special("<|eot|>")], np.int32)])

    def reply_prefix(self, speaker: str = "B") -> np.ndarray:
        """The start of a turn for ``Model.generate`` to complete: ``<|turn|> <|speaker_b|>``
        (GPT-2's tokenizer: ``"B:"``)."""
        if speaker not in ("A", "B"):
            raise Error(f"speaker must be 'A' or 'B', got {speaker!r}")
        if not self.has_specials:
            return self.encode(f"{speaker}:")
        return np.array([self.special("<|turn|>"),
                         self.special("<|speaker_a|>" if speaker == "A" else "<|speaker_b|>")], np.int32)

    def stop_tokens(self) -> np.ndarray:
        """What ends a generated turn: <|eot|>; with GPT-2's tokenizer every token holding a
        newline, and <|endoftext|>."""
        if self.has_specials:
            return np.array([self.special("<|eot|>")], np.int32)
        pieces = ((i, self._bytes_or_none(i)) for i in range(self.vocab_size))
        return np.array([i for i, b in pieces if b is not None and (b"\n" in b or b == b"<|endoftext|>")], np.int32)

    def _bytes_or_none(self, token: int) -> Optional[bytes]:
        if not -2**31 <= token < 2**31:
            return None
        n = c_size_t(0)
        p = lib.mn_tokenizer_token_bytes(self._h, token, byref(n))
        return ctypes.string_at(p, n.value) if p else None


class Model:
    """A trained model (docs/model.md) on the CPU. Inference calls take explicit states:
    nothing about a conversation is kept inside the model."""

    def __init__(self, handle: int, tokenizer: Optional[Tokenizer] = None):
        self._h = c_void_p(handle)
        self.tokenizer = tokenizer
        c = lib.mn_model_config(self._h).contents
        self.config = {f: getattr(c, f) for f, _ in _lib.Config._fields_}
        self.n_slots, self.d_model = c.n_slots, c.d_model
        self.vocab_size, self.max_turn_tokens = c.vocab_size, c.max_turn_tokens
        self.fingerprint = lib.mn_model_fingerprint(self._h)

    def __del__(self) -> None:
        if getattr(self, "_h", None) and self._h.value:
            lib.mn_model_free(self._h)
            self._h = None

    def __repr__(self) -> str:
        c = self.config
        return (f"<mnemo.Model V {c['vocab_size']}, C {c['d_model']}, {c['n_heads']} heads, "
                f"decoder {c['n_layers']} + compressor {c['n_comp_layers']} layers, k {c['n_slots']}, "
                f"N {c['max_turn_tokens']}, fingerprint {self.fingerprint:016x}>")

    @property
    def state_shape(self) -> tuple:
        """(k, C): the shape of a session state."""
        return (self.n_slots, self.d_model)

    def set_threads(self, threads: int) -> None:
        """CPU threads of this model's calls (0: OpenMP's default)."""
        check(lib.mn_model_set_threads(self._h, int(threads)))

    def parameters(self) -> dict:
        """Every tensor by its docs/model.md name, as a numpy view of the model's own
        parameters (no copy: writing to it changes the model)."""
        n = lib.mn_model_num_params(self._h)
        buf = (ctypes.c_float * n).from_address(ctypes.addressof(lib.mn_model_params(self._h).contents))
        buf.model = self  # the views keep the model (and so its buffer) alive
        base = np.frombuffer(buf, np.float32)
        out = {}
        for i in range(lib.mn_model_num_tensors(self._h)):
            t = _lib.TensorInfo()
            check(lib.mn_model_tensor(self._h, i, byref(t)))
            shape = tuple(t.shape[: t.ndim])
            out[t.name.decode()] = base[t.offset: t.offset + t.size].reshape(shape)
        return out

    def _check_state(self, state, what: str = "state") -> np.ndarray:
        if not isinstance(state, np.ndarray):
            raise Error(f"{what} must be a numpy float32 array of shape {self.state_shape}, got {type(state).__name__}")
        if state.dtype != np.float32:
            raise Error(f"{what} must be float32, got dtype {state.dtype} (use .astype(np.float32))")
        if state.shape != self.state_shape:
            raise Error(f"{what} must have shape (k, C) = {self.state_shape}, got {state.shape}")
        fp = getattr(state, "fingerprint", None)
        if fp is not None and fp != self.fingerprint:
            raise Error(f"{what} was written by another compressor (fingerprint {fp:016x}); this model's is "
                        f"{self.fingerprint:016x}", "MN_ERR_MISMATCH")
        return np.ascontiguousarray(state)

    def initial_state(self) -> State:
        """R_0, the learned initial state: a new (k, C) float32 array."""
        r = np.empty(self.state_shape, np.float32)
        check(lib.mn_initial_state(self._h, _ptr(r, ctypes.c_float)))
        return _state(r, self.fingerprint, 0)

    def update(self, state: np.ndarray, tokens: Tokens) -> State:
        """The state after one more turn (1..N tokens): a new array; ``state`` is unchanged."""
        r = self._check_state(state)
        t = _tokens(tokens)
        out = np.empty(self.state_shape, np.float32)
        check(lib.mn_update(self._h, _ptr(t, ctypes.c_int32), len(t), _ptr(r, ctypes.c_float),
                            _ptr(out, ctypes.c_float)))
        return _state(out, self.fingerprint, getattr(state, "turns", 0) + 1)

    def update_batch(self, states: np.ndarray, turns: Sequence[Tokens]) -> State:
        """Many sessions in one call: states (B, k, C) float32 and B turns; returns the B new
        states (B, k, C). The same results as B calls of update, up to rounding."""
        if not isinstance(states, np.ndarray) or states.dtype != np.float32:
            raise Error(f"states must be a float32 array of shape (B, {self.n_slots}, {self.d_model}), got "
                        f"{getattr(states, 'dtype', type(states).__name__)}")
        if states.ndim != 3 or states.shape[1:] != self.state_shape:
            raise Error(f"states must have shape (B, {self.n_slots}, {self.d_model}), got {states.shape}")
        if len(turns) != states.shape[0]:
            raise Error(f"{states.shape[0]} states but {len(turns)} turns")
        fp = getattr(states, "fingerprint", None)
        if fp is not None and fp != self.fingerprint:
            raise Error(f"states were written by another compressor (fingerprint {fp:016x}); this model's is "
                        f"{self.fingerprint:016x}", "MN_ERR_MISMATCH")
        ts = [_tokens(t, f"turns[{i}]") for i, t in enumerate(turns)]
        flat = np.concatenate(ts) if ts else np.empty(0, np.int32)
        offsets = np.zeros(len(ts) + 1, np.int64)
        offsets[1:] = np.cumsum([len(t) for t in ts])
        r = np.ascontiguousarray(states)
        out = np.empty_like(r)
        check(lib.mn_update_batch(self._h, len(ts), _ptr(flat, ctypes.c_int32), _ptr(offsets, ctypes.c_int64),
                                  _ptr(r, ctypes.c_float), _ptr(out, ctypes.c_float)))
        return _state(out, self.fingerprint, getattr(states, "turns", 0) + 1)

    def logits(self, state: Optional[np.ndarray], tokens: Tokens) -> np.ndarray:
        """Decoder logits (n, V) of a turn read with state (row i predicts token i+1); with
        state None, the decoder on the tokens alone (no memory prefix)."""
        t = _tokens(tokens)
        out = np.empty((len(t), self.vocab_size), np.float32)
        if state is None:
            check(lib.mn_logits_no_memory(self._h, _ptr(t, ctypes.c_int32), len(t), _ptr(out, ctypes.c_float)))
        else:
            r = self._check_state(state)
            check(lib.mn_logits(self._h, _ptr(t, ctypes.c_int32), len(t), _ptr(r, ctypes.c_float),
                                _ptr(out, ctypes.c_float)))
        return out

    def generate(self, state: Optional[np.ndarray], prompt: Tokens, max_tokens: Optional[int] = None,
                 stop: Optional[Tokens] = None, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0) -> np.ndarray:
        """Completes a turn read with state (None: no memory). ``prompt`` (>= 1 tokens, e.g.
        ``tokenizer.reply_prefix()``) starts it; tokens are drawn until one of ``stop`` (kept;
        default: the tokenizer's ``stop_tokens()``) or ``max_tokens`` in all (default and at
        most N with memory). Temperature 0 is greedy. Returns the whole turn, prompt included
        (int32), ready for ``update``; ``tokenizer.decode(turn, skip_special=True)`` is its text."""
        p = _tokens(prompt, "prompt")
        limit = self.max_turn_tokens if max_tokens is None else int(max_tokens)
        if stop is None:
            stop = self.tokenizer.stop_tokens() if self.tokenizer is not None else np.empty(0, np.int32)
        s = _tokens(stop, "stop")
        if limit < len(p) or limit <= 0:
            raise Error(f"max_tokens {limit} must be at least the prompt's {len(p)} tokens")
        out = np.empty(limit, np.int32)
        n = c_int(0)
        rng = c_uint64(seed)
        sampling = _lib.Sampling(float(temperature), int(top_k), float(top_p))
        r = None if state is None else self._check_state(state)
        check(lib.mn_generate(self._h, None if r is None else _ptr(r, ctypes.c_float), _ptr(p, ctypes.c_int32),
                              len(p), limit, _ptr(s, ctypes.c_int32), len(s), byref(sampling), byref(rng),
                              _ptr(out, ctypes.c_int32), byref(n)))
        return out[: n.value]


class Loaded(NamedTuple):
    """What ``mnemo.load`` returns: ``model, tokenizer = mnemo.load(path)``."""
    model: Model
    tokenizer: Optional[Tokenizer]


def load(path: PathLike) -> Loaded:
    """Loads a checkpoint (`mnemo train`, `mnemo import-gpt2`): its model and its tokenizer
    (None when it holds none). ``model.tokenizer`` is the same tokenizer."""
    p = path_arg(path)
    tok_h = c_void_p()
    check(lib.mn_checkpoint_load_tokenizer(p, byref(tok_h)))
    tok = Tokenizer(tok_h.value) if tok_h.value else None
    model_h = c_void_p()
    check(lib.mn_model_load(p, byref(model_h)))
    return Loaded(Model(model_h.value, tok), tok)


class SessionInfo(NamedTuple):
    """A stored session's description (docs/sessions.md)."""
    id: str
    turns: int
    created_us: int
    updated_us: int
    fingerprint: int


def _info(c: _lib.SessionInfo) -> SessionInfo:
    return SessionInfo(c.id.decode("utf-8", "surrogateescape"), c.turns, c.created_us, c.updated_us, c.fingerprint)


class SessionStore(collections.abc.MutableMapping):
    """Many sessions' states in one file (docs/sessions.md), as a mapping of session id ->
    State: ``store["alice"] = state``, ``store["alice"]``, ``del store["alice"]``, ``list(store)``.

    ``model`` (optional) gives the shape of a new store and the fingerprint every get and put
    must match; without it a put needs a State (which knows its compressor) and a get returns
    the state with the fingerprint it was stored with. A put is atomic and durable on return.
    One writer per store at a time (``readonly=True`` opens it as a reader).
    """

    def __init__(self, path: PathLike, model: Optional[Model] = None, *, readonly: bool = False,
                 create: bool = True, sync: bool = True):
        self.path = os.fspath(path)
        self.model = model
        flags = 0 if readonly else _lib.STORE_WRITE | (_lib.STORE_CREATE if create else 0)
        flags |= 0 if sync else _lib.STORE_NO_SYNC
        k, c = model.state_shape if model is not None else (0, 0)
        h = c_void_p()
        check(lib.mn_session_store_open(path_arg(path), flags, k, c, byref(h)))
        self._h = h
        kk, cc = c_int(0), c_int(0)
        lib.mn_session_store_shape(self._h, byref(kk), byref(cc))
        self.state_shape = (kk.value, cc.value)

    def close(self) -> None:
        """Closes the store (releases its lock); later calls raise Error."""
        if getattr(self, "_h", None) and self._h.value:
            lib.mn_session_store_close(self._h)
        self._h = None

    __del__ = close

    def __enter__(self) -> "SessionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handle(self) -> c_void_p:
        if not getattr(self, "_h", None):
            raise Error(f"{self.path}: the store is closed")
        return self._h

    @staticmethod
    def _id(session_id: str) -> bytes:
        if not isinstance(session_id, str):
            raise Error(f"a session id is a str, got {type(session_id).__name__}")
        return session_id.encode("utf-8", "surrogateescape")

    def info(self, session_id: str) -> Optional[SessionInfo]:
        """The session's description, or None when the store does not hold it."""
        ci, found = _lib.SessionInfo(), c_int(0)
        check(lib.mn_session_get(self._handle(), self._id(session_id), 0, None, byref(ci), byref(found)))
        return _info(ci) if found.value else None

    def get_state(self, session_id: str) -> Optional[State]:
        """The session's state, or None when absent (``store[id]`` raises KeyError instead)."""
        info = self.info(session_id)
        if info is None:
            return None
        fp = self.model.fingerprint if self.model is not None else info.fingerprint
        r = np.empty(self.state_shape, np.float32)
        ci, found = _lib.SessionInfo(), c_int(0)
        check(lib.mn_session_get(self._handle(), self._id(session_id), fp, _ptr(r, ctypes.c_float), byref(ci),
                                 byref(found)))
        return _state(r, ci.fingerprint, ci.turns) if found.value else None

    def put(self, session_id: str, state: np.ndarray, turns: Optional[int] = None) -> None:
        """Stores (creates or replaces) a session's state; ``turns`` defaults to the State's."""
        if not isinstance(state, np.ndarray) or state.dtype != np.float32 or state.shape != self.state_shape:
            raise Error(f"{self.path}: a state must be a float32 array of shape {self.state_shape}, got "
                        f"{getattr(state, 'dtype', type(state).__name__)} {getattr(state, 'shape', '')}")
        fp = getattr(state, "fingerprint", None)
        if self.model is not None:
            if fp is not None and fp != self.model.fingerprint:
                raise Error(f"{self.path}: the state was written by another compressor (fingerprint {fp:016x}); "
                            f"the store's model is {self.model.fingerprint:016x}", "MN_ERR_MISMATCH")
            fp = self.model.fingerprint
        if fp is None:
            raise Error(f"{self.path}: a plain array does not say which compressor wrote it: pass a State "
                        f"(from Model.update) or open the store with its model")
        r = np.ascontiguousarray(state)
        n = getattr(state, "turns", 0) if turns is None else int(turns)
        check(lib.mn_session_put(self._handle(), self._id(session_id), fp, _ptr(r, ctypes.c_float), n))

    def list(self) -> list:
        """Every session's SessionInfo, sorted by id."""
        p, n = ctypes.POINTER(_lib.SessionInfo)(), c_size_t(0)
        check(lib.mn_session_list(self._handle(), byref(p), byref(n)))
        try:
            return [_info(p[i]) for i in range(n.value)]
        finally:
            _lib.free(ctypes.cast(p, c_void_p))

    def compact(self) -> None:
        """Rewrites the snapshot with every live session and starts an empty journal."""
        check(lib.mn_session_store_compact(self._handle()))

    def __getitem__(self, session_id: str) -> State:
        s = self.get_state(session_id)
        if s is None:
            raise KeyError(session_id)
        return s

    def __setitem__(self, session_id: str, state: np.ndarray) -> None:
        self.put(session_id, state)

    def __delitem__(self, session_id: str) -> None:
        existed = c_int(0)
        check(lib.mn_session_delete(self._handle(), self._id(session_id), byref(existed)))
        if not existed.value:
            raise KeyError(session_id)

    def __contains__(self, session_id) -> bool:
        return isinstance(session_id, str) and self.info(session_id) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([i.id for i in self.list()])

    def __len__(self) -> int:
        return len(self.list())


def evaluate(checkpoint: PathLike, jsonl: PathLike, modes: Optional[Sequence[str]] = None,
             window_tokens: Optional[Sequence[int]] = None, max_probes: int = 0, threads: int = 0,
             generate: bool = False, max_gen_tokens: int = 0, lm: bool = True,
             retrieval_tokens: Optional[Sequence[int]] = None,
             summary_tokens: Optional[Sequence[int]] = None) -> dict:
    """Runs `mnemo eval` (docs/eval.md) on a checkpoint and canonical dialogue JSONL and
    returns its JSON report as a dict. ``modes``: of "memory", "no_memory", "window", "full",
    "retrieval", "summary" (default the first four); ``window_tokens``, ``retrieval_tokens``,
    ``summary_tokens``: the budgets of the sized modes (default k and 4k);
    ``generate``: greedy answers too (exact match, F1); ``lm``: per-turn LM loss."""
    def joined(items, what):
        if items is None:
            return None
        if isinstance(items, (str, bytes)):
            raise Error(f"{what} must be a list, e.g. ['memory', 'no_memory'], got {items!r}")
        return ",".join(str(i) for i in items).encode()
    cfg = _lib.EvalConfig(joined(modes, "modes"), joined(window_tokens, "window_tokens"), int(max_probes),
                          int(threads), int(bool(generate)), int(max_gen_tokens), int(bool(lm)),
                          joined(retrieval_tokens, "retrieval_tokens"), joined(summary_tokens, "summary_tokens"))
    with tempfile.TemporaryDirectory(prefix="mnemo-eval-") as d:
        out = os.path.join(d, "report.json")
        check(lib.mn_eval_checkpoint(path_arg(checkpoint), path_arg(jsonl), byref(cfg), path_arg(out)))
        with open(out, encoding="utf-8") as f:
            return json.load(f)


from . import hf  # noqa: E402  (after the classes it uses)
