"""V2 / Open Inference Protocol tensors -> rows (KServe V2 requests and responses).

A request's ``inputs`` (a response's ``outputs``) are either one tensor of shape ``[n, k]`` (data
flat row-major or nested) or one tensor per feature named after it, of shape ``[n]`` or
``[n, 1]``; a single tensor of shape ``[n]``/``[n, 1]`` feeds a single feature whatever its
name. Values are then checked by the same rules as V1 instances
(:func:`modelmonitor.core.payload_rows.rows_of`).

>>> from modelmonitor.core.spec import Feature
>>> from modelmonitor.core.payload_rows import REQUEST_WORDS, layout_of
>>> iris = layout_of((Feature("sepal_length", "numerical", 0), Feature("sepal_width", "numerical", 1)))
>>> tensors_to_rows([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[6.2, 2.9], [5, 3]]}],
...                 iris, REQUEST_WORDS)
[[6.2, 2.9], [5.0, 3.0]]
"""
from __future__ import annotations

import math
from typing import Any

from modelmonitor.core.payload_rows import Layout, PayloadError, Words, kind, rows_of, show

FP_DATATYPES = ("FP16", "FP32", "FP64")
_INT_DATATYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
V2_DATATYPES = ("BOOL",) + _INT_DATATYPES + FP_DATATYPES + ("BYTES",)
_V2_DATATYPE_SET = frozenset(V2_DATATYPES)


#: V2 tensors that feed a table have rank 1 or 2; deeper shapes are refused before their nested
#: data is walked (recursively), so a hostile rank cannot exhaust the stack.
_MAX_RANK = 8


def looks_like_tensor(obj: Any, layout: Layout) -> bool:
    """A V2 tensor object, as opposed to a V1 instance keyed by feature names."""
    return (type(obj) is dict and "data" in obj and ("datatype" in obj or "shape" in obj)
            and not layout.name_set.issubset(obj))


def _flatten(data: list, shape: list[int], depth: int, out: list, where: str) -> None:
    """Append nested ``data`` to ``out``, checking that its nesting mirrors ``shape``."""
    if len(data) != shape[depth]:
        raise PayloadError(f"{where}: nested data has {len(data)} entries at depth {depth}, "
                           f"shape {shape} says {shape[depth]}")
    if depth == len(shape) - 1:
        if any(isinstance(value, list) for value in data):
            raise PayloadError(f"{where}: nested data is deeper than shape {shape}")
        out.extend(data)
        return
    for sub in data:
        if not isinstance(sub, list):
            raise PayloadError(f"{where}: nested data is not as deep as shape {shape}")
        _flatten(sub, shape, depth + 1, out, where)


class _Tensor:
    __slots__ = ("index", "name", "datatype", "shape", "values", "where")

    def __init__(self, obj: Any, index: int, w: Words):
        where = f"{w.top}[{index}]"
        if not isinstance(obj, dict):
            raise PayloadError(f"{where} is {kind(obj)}, expected a tensor object "
                               "{name, shape, datatype, data}")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise PayloadError(f"{where} lacks 'name' (a non-empty string)")
        where = f"{where} {name!r}"
        datatype = obj.get("datatype")
        if not isinstance(datatype, str) or datatype not in _V2_DATATYPE_SET:   # a list is unhashable
            if datatype is None:
                raise PayloadError(f"{where} lacks 'datatype'")
            raise PayloadError(f"{where}: datatype {show(datatype)} is not an Open Inference Protocol "
                               f"datatype ({', '.join(V2_DATATYPES)})")
        shape = obj.get("shape")
        if (not isinstance(shape, list) or not shape
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise PayloadError(f"{where}: shape must be a non-empty list of non-negative integers, "
                               f"got {show(shape)}")
        if len(shape) > _MAX_RANK:
            raise PayloadError(f"{where}: shape {show(shape)} has {len(shape)} dimensions; a tensor "
                               "feeding the features has 1 or 2")
        data = obj.get("data")
        if not isinstance(data, list):
            if data is None:
                raise PayloadError(f"{where} lacks 'data'")
            raise PayloadError(f"{where}: data must be a list, got {kind(data)}")
        size = math.prod(shape)
        if data and isinstance(data[0], list):
            flat: list = []
            _flatten(data, shape, 0, flat, where)
            data = flat
        elif len(data) != size:
            raise PayloadError(f"{where}: data has {len(data)} values but shape {shape} holds {size}")
        self.index, self.name, self.datatype, self.shape = index, name, datatype, shape
        self.values, self.where = data, where

    def check_feeds(self, name: str, numerical: bool, w: Words) -> None:
        if numerical and self.datatype == "BYTES":
            raise PayloadError(f"{self.where}: datatype BYTES (strings) cannot feed numerical "
                               f"{w.field} {name!r}")
        if not numerical and self.datatype in FP_DATATYPES:
            raise PayloadError(f"{self.where}: datatype {self.datatype} cannot feed categorical "
                               f"{w.field} {name!r} (use BYTES, an integer type or BOOL)")


def tensors_to_rows(tensors: list, layout: Layout, w: Words) -> list[list]:
    parsed = [_Tensor(obj, i, w) for i, obj in enumerate(tensors)]
    k = layout.width
    if len(parsed) == 1:
        only = parsed[0]
        shape = only.shape
        if (len(shape) == 2 and shape[1] == k) or (k == 1 and len(shape) == 1):
            # Only two datatype/type pairs are incompatible: check the first feature of each kind.
            if only.datatype == "BYTES" and layout.numerical_positions:
                only.check_feeds(layout.names[layout.numerical_positions[0]], True, w)
            if only.datatype in FP_DATATYPES and layout.categorical_positions:
                only.check_feeds(layout.names[layout.categorical_positions[0]], False, w)
            n = shape[0]
            if n == 0:
                raise PayloadError(f"empty batch: {only.where} has shape {shape}")
            values = only.values
            if k == 1:
                raw = [[v] for v in values]
            else:
                raw = [values[i:i + k] for i in range(0, n * k, k)]
            return rows_of(raw, layout, w)
        if only.name not in layout.name_set:  # else: one input per feature, the others missing
            raise PayloadError(f"{only.where} has shape {shape}, expected [n, {k}] ({layout.listing})"
                               f"{' or [n]' if k == 1 else f' or {w.one_per_field} of shape [n]'}")
    by_name: dict[str, _Tensor] = {}
    for tensor in parsed:
        if tensor.name in by_name:
            raise PayloadError(f"{w.top}[{by_name[tensor.name].index}] and {w.top}[{tensor.index}] "
                               f"are both named {tensor.name!r}")
        by_name[tensor.name] = tensor
    columns = []
    n = None
    first = None
    for name, numerical in zip(layout.names, layout.numerical):
        tensor = by_name.get(name)
        if tensor is None:
            got = ", ".join(repr(t.name) for t in parsed)
            raise PayloadError(f"no {w.tensor} named {name!r} ({w.one_per_field} is expected; "
                               f"{w.top}: {got})")
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise PayloadError(f"{tensor.where} has shape {shape}, expected [n] or [n, 1] "
                               f"(one value per {w.item})")
        tensor.check_feeds(name, numerical, w)
        if n is None:
            n, first = shape[0], tensor
        elif shape[0] != n:
            raise PayloadError(f"{w.top} disagree on the batch size: {first.where} has {n} values, "
                               f"{tensor.where} has {shape[0]}")
        columns.append(tensor.values)
    if n == 0:
        raise PayloadError(f"empty batch: {first.where} has shape {first.shape}")
    raw = [list(values) for values in zip(*columns)]
    return rows_of(raw, layout, w)


# ---------------------------------------------------------------------------------------------
# Entry points

