"""Trainer state on disk without pickle: tensors in safetensors, structure in JSON.

Resuming a checkpoint must not run code that whoever wrote the checkpoint put in it, and
``torch.load(weights_only=False)`` (pickle) does exactly that. The trainer state (optimizer and
scheduler state dicts, grad scaler, RNG states, data position, counters) is therefore written as
two files:

    <stem>.safetensors   every tensor and numpy array, as tensors under generated keys t0, t1...
    <stem>.json          the structure, with type markers where JSON alone would lose the type

Reading them parses JSON and a safetensors header, nothing else: no code can be executed.

Supported values: None, bool, int, float (NaN/Inf too), str, bytes, list, tuple, dicts with any
of these as keys (optimizer state dicts use int keys), ``torch.Tensor`` (any device; read back on
CPU, contiguous), ``numpy.ndarray`` and numpy scalars (numeric dtypes), ``torch.dtype`` and
``torch.Size``. Anything else raises ``TypeError`` naming where it is in the state.

A marker is a JSON object with a ``"$type"`` key, e.g. ``{"$type": "tuple", "items": [...]}``.
A plain dict is written as a JSON object when all its keys are strings and none is ``"$type"``,
otherwise as ``{"$type": "dict", "items": [[key, value], ...]}``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from gpt5_ablate.errors import InputError
from gpt5_ablate.files import write_atomic

log = logging.getLogger("gpt5_ablate")

FORMAT = "gpt5_ablate.state"
VERSION = 1
TYPE = "$type"
# Suffixes of files that torch/pickle would unpickle (arbitrary code) when loaded.

# What safetensors can store (complex128, for one, it cannot).
_TENSOR_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint64",
        "uint32",
        "uint16",
        "uint8",
        "bool",
        "complex64",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
    )
    if hasattr(torch, name)
}
_DTYPE_NAMES = {dtype: name for name, dtype in _TENSOR_DTYPES.items()}
_NUMPY_KINDS = "biufc"  # bool, int, uint, float, complex: no objects, strings or records


# --- save ------------------------------------------------------------------------------------


def save_state(state: Mapping[str, Any], directory: Path, stem: str = "trainer_state") -> None:
    """Write ``state`` as ``directory/<stem>.safetensors`` + ``directory/<stem>.json``, each
    atomically (temp name + ``os.replace``). The JSON is written second and names the tensor
    file's random ``state_id``, so a reader can tell that both halves belong together."""
    directory = Path(directory)
    encoder = _Encoder()
    structure = encoder.encode(state, "state")
    state_id = uuid.uuid4().hex
    tensors_name = f"{stem}.safetensors"
    directory.mkdir(parents=True, exist_ok=True)
    blob = save_tensors(encoder.tensors, metadata={"format": FORMAT, "state_id": state_id})
    write_atomic(directory / tensors_name, blob)
    document = {
        "format": FORMAT,
        "version": VERSION,
        "state_id": state_id,
        "tensors": tensors_name,
        "state": structure,
    }
    # allow_nan=False: non-finite floats are markers, so the file stays standard JSON.
    text = json.dumps(document, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    write_atomic(directory / f"{stem}.json", text.encode("utf-8"))


class _Encoder:
    """Turns a state into JSON-ready data, collecting tensors into ``self.tensors``."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        # id() of an object already stored -> its key: one copy on disk, one object on load.
        # The state holds every object for the whole save, so ids cannot be reused meanwhile.
        self._stored: dict[int, str] = {}

    def encode(self, value: Any, where: str) -> Any:
        # numpy scalars first: np.float64 subclasses float and np.bool_ is not a bool.
        if isinstance(value, np.generic):
            return self._numpy_scalar(value, where)
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int):
            return int(value)  # an IntEnum or other subclass is stored as its value
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {TYPE: "float", "value": repr(value)}
        if isinstance(value, torch.Tensor):
            return self._tensor(value, where)
        if isinstance(value, np.ndarray):
            return self._ndarray(value, where)
        if isinstance(value, torch.Size):
            return {TYPE: "torch_size", "items": list(value)}
        if isinstance(value, torch.dtype):
            if value not in _DTYPE_NAMES:
                raise TypeError(f"{where}: torch dtype {value} cannot be stored")
            return {TYPE: "torch_dtype", "name": _DTYPE_NAMES[value]}
        if isinstance(value, bytes | bytearray):
            return {TYPE: "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, tuple):
            items = [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return {TYPE: "tuple", "items": items}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return self._mapping(value, where)
        raise TypeError(
            f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored "
            "without pickle; convert it to plain values (numbers, strings, lists, dicts, tensors)."
        )

    def _mapping(self, value: Mapping[Any, Any], where: str) -> Any:
        if all(isinstance(k, str) and k != TYPE for k in value):
            return {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        items = []
        for key, item in value.items():
            if isinstance(key, torch.Tensor | np.ndarray):
                raise TypeError(f"{where}: a tensor cannot be a dict key")
            items.append([self.encode(key, f"{where} key"), self.encode(item, f"{where}[{key!r}]")])
        return {TYPE: "dict", "items": items}

    def _tensor(self, value: torch.Tensor, where: str) -> dict[str, Any]:
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            # DTensor and friends need collectives or custom layouts: use torch.distributed.checkpoint.
            raise TypeError(f"{where}: a {type(value).__name__} cannot be stored here")
        if value.layout != torch.strided or value.is_quantized:
            raise TypeError(f"{where}: only dense tensors can be stored (got {value.layout})")
        if value.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{where}: dtype {value.dtype} is not supported by safetensors")
        key = self._stored.get(id(value))
        if key is None:
            key = self._new_key(value)
            # A fresh, contiguous CPU copy (one copy, from any device): safetensors refuses views
            # and tensors that share memory (tied or aliased optimizer buffers), and the copy
            # cannot change under us while the file is written.
            self.tensors[key] = value.detach().to(
                "cpu", copy=True, memory_format=torch.contiguous_format
            )
        return {
            TYPE: "tensor",
            "key": key,
            "dtype": _DTYPE_NAMES[value.dtype],
            "shape": list(value.shape),
        }

    def _ndarray(self, value: np.ndarray, where: str) -> dict[str, Any]:
        if value.dtype.kind not in _NUMPY_KINDS or value.dtype.fields is not None:
            raise TypeError(f"{where}: numpy dtype {value.dtype} cannot be stored")
        key = self._stored.get(id(value))
        if key is None:
            # A C-ordered native-endian copy (astype keeps 0-d arrays 0-d; ascontiguousarray
            # would not); the JSON keeps the original dtype, byte order included.
            native = value.astype(value.dtype.newbyteorder("="), order="C", copy=True)
            tensor = torch.from_numpy(native)
            if tensor.dtype not in _DTYPE_NAMES:
                raise TypeError(f"{where}: numpy dtype {value.dtype} is not supported")
            key = self._new_key(value)
            self.tensors[key] = tensor
        return {TYPE: "ndarray", "key": key, "dtype": value.dtype.str, "shape": list(value.shape)}

    def _numpy_scalar(self, value: np.generic, where: str) -> dict[str, Any]:
        if value.dtype.kind not in _NUMPY_KINDS:
            raise TypeError(f"{where}: numpy scalar of dtype {value.dtype} cannot be stored")
        item = value.item()
        if isinstance(item, complex):
            item = [item.real, item.imag]
        return {TYPE: "numpy_scalar", "dtype": value.dtype.str, "value": self.encode(item, where)}

    def _new_key(self, value: Any) -> str:
        key = f"t{len(self.tensors)}"
        self._stored[id(value)] = key
        return key


# --- load ------------------------------------------------------------------------------------


def load_state(directory: Path, stem: str = "trainer_state") -> dict[str, Any]:
    """Read what ``save_state`` wrote. Executes no code from the files (JSON + safetensors
    only); tensors come back on CPU. Raises ``InputError`` naming the file when a file is
    missing, unreadable, from another save, or refers to a tensor that is not there."""
    directory = Path(directory)
    json_path = directory / f"{stem}.json"
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise InputError(
            f"{json_path} does not exist: this checkpoint has no trainer state."
        ) from error
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{json_path} cannot be read as a trainer state ({error}).") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{json_path} is not a gpt5_ablate trainer state file.")
    if document.get("version") != VERSION:
        raise InputError(
            f"{json_path} has trainer state format version {document.get('version')!r}; this "
            f"version of gpt5_ablate reads version {VERSION}."
        )
    tensors_name = document.get("tensors")
    if not isinstance(tensors_name, str) or Path(tensors_name).name != tensors_name:
        raise InputError(f"{json_path} names no valid tensor file ({tensors_name!r}).")
    tensors_path = directory / tensors_name
    decoder = _Decoder(json_path, tensors_path, document.get("state_id"))
    try:
        state = decoder.decode(document.get("state"))
    finally:
        decoder.close()
    if not isinstance(state, dict):
        raise InputError(f"{json_path} does not hold a state dict.")
    return state


class _Decoder:
    def __init__(self, json_path: Path, tensors_path: Path, state_id: Any) -> None:
        self.json_path = json_path
        self.tensors_path = tensors_path
        self.state_id = state_id
        self._file: Any = None
        self._keys: set[str] = set()
        self._loaded: dict[str, Any] = {}  # key -> tensor or array: aliases stay one object

    def close(self) -> None:
        if self._file is not None:
            self._file.__exit__(None, None, None)
            self._file = None

    def _tensors(self) -> Any:
        if self._file is None:
            try:
                handle = safe_open(str(self.tensors_path), framework="pt", device="cpu")
                self._file = handle.__enter__()
            except FileNotFoundError as error:
                raise self._error(f"{self.tensors_path} does not exist") from error
            except Exception as error:  # safetensors' own error type for damaged headers
                raise self._error(f"{self.tensors_path} cannot be read ({error})") from error
            self._keys = set(self._file.keys())
            saved_id = (self._file.metadata() or {}).get("state_id")
            if saved_id != self.state_id:
                raise self._error(
                    f"{self.tensors_path} (state_id {saved_id!r}) belongs to a different save "
                    f"than {self.json_path.name} (state_id {self.state_id!r})"
                )
        return self._file

    def _error(self, what: str) -> InputError:
        return InputError(
            f"The trainer state in {self.json_path.parent} is damaged: {what}. Its files "
            f"{self.json_path.name} and {self.tensors_path.name} must come from the same save; "
            "resume from another checkpoint or start afresh with trainer.resume=false."
        )

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value  # None, bool, int, float, str
        if TYPE not in value:
            return {k: self.decode(v) for k, v in value.items()}
        try:
            return self._marker(value)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(
                f"{self.json_path} holds a malformed {value.get(TYPE)!r} entry ({error!r})."
            ) from error

    def _marker(self, value: dict[str, Any]) -> Any:
        kind = value[TYPE]
        if kind == "tuple":
            return tuple(self.decode(v) for v in value["items"])
        if kind == "dict":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in value["items"]}
        if kind == "float":
            if value["value"] not in ("nan", "inf", "-inf"):
                raise ValueError(f"not a non-finite float: {value['value']!r}")
            return float(value["value"])
        if kind == "bytes":
            return base64.b64decode(value["base64"], validate=True)
        if kind == "torch_size":
            return torch.Size(int(v) for v in value["items"])
        if kind == "torch_dtype":
            return _TENSOR_DTYPES[value["name"]]
        if kind == "numpy_scalar":
            dtype = _numpy_dtype(value["dtype"])
            item = self.decode(value["value"])
            return dtype.type(complex(*item) if dtype.kind == "c" else item)
        if kind == "tensor":
            return self._tensor(value)
        if kind == "ndarray":
            return self._ndarray(value)
        raise ValueError(f"unknown type marker {kind!r}")

    def _read(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str):
            raise ValueError(f"tensor key {key!r}")
        tensors = self._tensors()
        if key not in self._keys:
            raise self._error(
                f"{self.json_path} refers to tensor {key!r}, which {self.tensors_path} does not hold"
            )
        return tensors.get_tensor(key)

    def _check(self, tensor: torch.Tensor, value: dict[str, Any], dtype: torch.dtype) -> None:
        if tensor.dtype != dtype or list(tensor.shape) != list(value["shape"]):
            raise self._error(
                f"tensor {value['key']!r} in {self.tensors_path} is {tensor.dtype} "
                f"{list(tensor.shape)}, but {self.json_path.name} expects {dtype} {value['shape']}"
            )

    def _tensor(self, value: dict[str, Any]) -> torch.Tensor:
        key = value["key"]
        if key not in self._loaded:
            tensor = self._read(key)
            self._check(tensor, value, _TENSOR_DTYPES[value["dtype"]])
            self._loaded[key] = tensor
        return self._loaded[key]

    def _ndarray(self, value: dict[str, Any]) -> np.ndarray:
        key = value["key"]
        if key not in self._loaded:
            dtype = _numpy_dtype(value["dtype"])
            tensor = self._read(key)
            native = dtype.newbyteorder("=")
            self._check(tensor, value, torch.from_numpy(np.empty(0, dtype=native)).dtype)
            self._loaded[key] = tensor.numpy().astype(dtype, copy=True)
        return self._loaded[key]


def _numpy_dtype(name: Any) -> np.dtype:
    dtype = np.dtype(str(name))
    if dtype.kind not in _NUMPY_KINDS or dtype.fields is not None:
        raise ValueError(f"numpy dtype {name!r} is not allowed")
    return dtype


def _hashable(key: Any) -> Any:
    # JSON has no tuples, but a decoded tuple key is already a tuple; lists cannot be keys.
    if isinstance(key, list | dict):
        raise ValueError(f"unhashable dict key {key!r}")
    return key
