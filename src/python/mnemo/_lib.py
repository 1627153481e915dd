"""The ctypes declarations of libmnemo's public C API (include/mnemo.h) and the error check.

Private to the package: mnemo/__init__.py and mnemo/hf.py build the Python API on these.
The library is the libmnemo.so installed inside this package (`pip install .`); the
environment variable MNEMO_LIBRARY names another one (a build tree's, for development).
"""
from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_int32, c_int64, c_size_t, c_uint64, c_void_p

_here = os.path.dirname(os.path.abspath(__file__))


class Error(Exception):
    """A failure reported by libmnemo, or input the library would refuse.

    ``str(error)`` is mnemo's message (``mn_last_error()``: it names the file, field or
    argument and the reason); ``error.status`` is the status name, e.g. ``"MN_ERR_IO"``
    (``"MN_ERR_INVALID_ARG"`` for input refused before the call).
    """

    def __init__(self, message: str, status: str = "MN_ERR_INVALID_ARG"):
        super().__init__(message)
        self.status = status


def _load() -> ctypes.CDLL:
    path = os.environ.get("MNEMO_LIBRARY") or os.path.join(_here, "libmnemo.so")
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"mnemo: cannot load libmnemo ({path}): {e}; install the package with "
                          f"`pip install .` from the mnemo source tree, or set MNEMO_LIBRARY") from e


lib = _load()


class Config(ctypes.Structure):
    _fields_ = [("vocab_size", c_int), ("d_model", c_int), ("n_heads", c_int), ("n_layers", c_int),
                ("n_comp_layers", c_int), ("n_slots", c_int), ("max_turn_tokens", c_int),
                ("gate_bias_init", c_float), ("write_rule", c_int)]


class TensorInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("ndim", c_int), ("shape", c_int * 2), ("offset", c_size_t),
                ("size", c_size_t), ("decay", c_int)]


class Sampling(ctypes.Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float)]


SESSION_ID_MAX = 255


class SessionInfo(ctypes.Structure):
    _fields_ = [("id", ctypes.c_char * (SESSION_ID_MAX + 1)), ("turns", c_int64), ("created_us", c_int64),
                ("updated_us", c_int64), ("fingerprint", c_uint64)]


class EvalConfig(ctypes.Structure):
    _fields_ = [("modes", c_char_p), ("window_tokens", c_char_p), ("max_probes", c_int64), ("threads", c_int),
                ("generate", c_int), ("max_gen_tokens", c_int), ("lm", c_int),
                ("retrieval_tokens", c_char_p), ("summary_tokens", c_char_p)]


STORE_WRITE, STORE_CREATE, STORE_NO_SYNC = 1, 2, 4

f32p = POINTER(c_float)
i32p = POINTER(c_int32)


def _declare(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_declare("mn_last_error", c_char_p)
_declare("mn_status_name", c_char_p, c_int)
_declare("mn_model_load", c_int, c_char_p, POINTER(c_void_p))
_declare("mn_model_free", None, c_void_p)
_declare("mn_model_config", POINTER(Config), c_void_p)
_declare("mn_model_num_params", c_size_t, c_void_p)
_declare("mn_model_params", f32p, c_void_p)
_declare("mn_model_num_tensors", c_int, c_void_p)
_declare("mn_model_tensor", c_int, c_void_p, c_int, POINTER(TensorInfo))
_declare("mn_model_set_threads", c_int, c_void_p, c_int)
_declare("mn_model_fingerprint", c_uint64, c_void_p)
_declare("mn_state_floats", c_size_t, c_void_p)
_declare("mn_initial_state", c_int, c_void_p, f32p)
_declare("mn_update", c_int, c_void_p, i32p, c_int, f32p, f32p)
_declare("mn_update_batch", c_int, c_void_p, c_int, i32p, POINTER(c_int64), f32p, f32p)
_declare("mn_logits", c_int, c_void_p, i32p, c_int, f32p, f32p)
_declare("mn_logits_no_memory", c_int, c_void_p, i32p, c_int, f32p)
_declare("mn_generate", c_int, c_void_p, f32p, i32p, c_int, c_int, i32p, c_int, POINTER(Sampling),
         POINTER(c_uint64), i32p, POINTER(c_int))
_declare("mn_l2_norm", c_double, f32p, c_size_t)
_declare("mn_checkpoint_load_tokenizer", c_int, c_char_p, POINTER(c_void_p))
_declare("mn_tokenizer_free", None, c_void_p)
_declare("mn_tokenizer_vocab_size", c_int, c_void_p)
_declare("mn_tokenizer_encode_ids", c_int, c_void_p, c_char_p, c_size_t, i32p, c_size_t, POINTER(c_size_t))
_declare("mn_tokenizer_token_bytes", POINTER(ctypes.c_uint8), c_void_p, c_int32, POINTER(c_size_t))
_declare("mn_tokenizer_special_id", c_int32, c_void_p, c_char_p)
_declare("mn_session_store_open", c_int, c_char_p, c_int, c_int, c_int, POINTER(c_void_p))
_declare("mn_session_store_close", None, c_void_p)
_declare("mn_session_store_shape", None, c_void_p, POINTER(c_int), POINTER(c_int))
_declare("mn_session_get", c_int, c_void_p, c_char_p, c_uint64, f32p, POINTER(SessionInfo), POINTER(c_int))
_declare("mn_session_put", c_int, c_void_p, c_char_p, c_uint64, f32p, c_int64)
_declare("mn_session_delete", c_int, c_void_p, c_char_p, POINTER(c_int))
_declare("mn_session_list", c_int, c_void_p, POINTER(POINTER(SessionInfo)), POINTER(c_size_t))
_declare("mn_session_store_compact", c_int, c_void_p)
_declare("mn_eval_checkpoint", c_int, c_char_p, c_char_p, POINTER(EvalConfig), c_char_p)
_declare("mn_import_gpt2", c_int, c_char_p, c_char_p, c_char_p, c_char_p, c_int, c_int, c_int, c_uint64, c_char_p)
_declare("mn_export_hf", c_int, c_char_p, c_char_p)

# mn_session_list's array is released with the C library's free()
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [c_void_p]
_libc.free.restype = None
free = _libc.free


def check(status: int) -> None:
    """Raises Error with mnemo's message when a call did not return MN_OK."""
    if status != 0:
        raise Error(lib.mn_last_error().decode("utf-8", "replace"), lib.mn_status_name(status).decode())


def path_arg(path) -> bytes:
    """A file name as the C API takes it (str, bytes or os.PathLike)."""
    p = os.fsencode(path)
    if b"\0" in p:
        raise Error(f"path {path!r} holds a NUL byte")
    return p
