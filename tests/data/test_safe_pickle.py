"""Tests for mirrorgan_tf/data/safe_pickle.py."""

import os
import pickle
import struct

import numpy as np
import pytest

from mirrorgan_tf.data.safe_pickle import UnsafePickleError, load_pickle


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 `str` (BINSTRING opcodes), like the published pickles."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("utf-8")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _dump(path, obj, protocol=2, py2=False):
    with open(path, "wb") as f:
        if py2:
            _Py2Pickler(f, protocol=protocol).dump(obj)
        else:
            pickle.dump(obj, f, protocol=protocol)
    return path


def _attngan_captions():
    ixtoword = {0: "<end>", 1: "bird", 2: "red", 3: "wings"}
    wordtoix = {w: i for i, w in ixtoword.items()}
    return [[[1, 2], [2, 3, 1]], [[3]], ixtoword, wordtoix]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_loads_attngan_structures(tmp_path, protocol):
    captions = _attngan_captions()
    assert load_pickle(_dump(tmp_path / "captions.pickle", captions, protocol)) == captions
    filenames = ["001.Black_footed_Albatross/Black_Footed_Albatross_0046_18", "002.x/y_1"]
    assert load_pickle(_dump(tmp_path / "filenames.pickle", filenames, protocol)) == filenames
    class_list = [1, 1, 2, 200]
    assert load_pickle(_dump(tmp_path / "class_info.pickle", class_list, protocol)) == class_list
    for array in (np.array([1, 1, 2, 200]), np.arange(6, dtype=np.float32).reshape(2, 3)):
        loaded = load_pickle(_dump(tmp_path / "class_info.pickle", array, protocol))
        np.testing.assert_array_equal(loaded, array)
        assert loaded.dtype == array.dtype
    other = {"set": {1, 2}, "frozen": frozenset("ab"), "tuple": (1.5, None, True), "bytes": b"\xff"}
    other["scalar"] = np.float32(2.5)
    other["complex"] = 1 + 2j
    assert load_pickle(_dump(tmp_path / "other.pickle", other, protocol)) == other


def test_loads_python2_pickles(tmp_path):
    captions = _attngan_captions()
    path = _dump(tmp_path / "captions.pickle", captions, py2=True)
    with open(path, "rb") as f:
        raw = f.read()
    assert pickle.SHORT_BINSTRING + b"\x05<end>" in raw  # really Python 2 str opcodes
    assert load_pickle(path) == captions
    filenames = ["001.Black_footed_Albatross/Black_Footed_Albatross_0046_18"] * 2
    assert load_pickle(_dump(tmp_path / "f.pickle", filenames, py2=True)) == filenames
    array = np.array([3, 1, 4], dtype=np.int64)
    loaded = load_pickle(_dump(tmp_path / "class_info.pickle", array, py2=True))
    np.testing.assert_array_equal(loaded, array)
    # Non-ASCII Python 2 str: Python 3's default (ASCII) fails, latin1 reads every byte.
    path = _dump(tmp_path / "utf8.pickle", [b"caf\xc3\xa9"], py2=True)
    with open(path, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)
    assert load_pickle(path) == ["caf\xc3\xa9".encode("latin1").decode("latin1")]


class _SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Getattr:
    def __reduce__(self):
        return (getattr, ("text", "upper"))


class _Codec:
    def __reduce__(self):
        import _codecs

        return (_codecs.encode, ("x", "rot13"))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_refuses_callables_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = ["fine", {"nested": [_SystemCall(f"touch {marker}")]}]
    path = _dump(tmp_path / "evil.pickle", payload, protocol)
    with pytest.raises(UnsafePickleError) as error:
        load_pickle(path)
    assert not marker.exists()
    message = str(error.value)
    assert "evil.pickle" in message and "system" in message
    assert isinstance(error.value, ValueError)

    # The payload is real: plain pickle runs it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("obj", [_Getattr(), _Codec(), np.load, print, os.path.join])
def test_refuses_other_globals(tmp_path, obj):
    with pytest.raises(UnsafePickleError):
        load_pickle(_dump(tmp_path / "x.pickle", [obj], 2))
