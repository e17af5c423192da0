"""float32 -> float16 conversion of an exported graph, inputs and outputs kept float32 (export_v3 --fp16).

Every float tensor becomes float16 except where float16 cannot hold the arithmetic: Sin/Cos (the
positional encodings reach angles of 1500 rad, where the float16 spacing is 1) and every node whose
float output feeds them, back to integer sources. Those nodes stay float32; Casts are inserted where a
tensor crosses between the two. Inputs that the ONNX spec types as float32 whatever the data (Resize's
scales) stay float32.
"""
from __future__ import annotations

from typing import Dict, Set

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
KEEP_FP32_OPS = {"Sin", "Cos"}
# (op type, input index) that must stay float32 whatever the data type
FLOAT32_INPUTS = {("Resize", 1), ("Resize", 2)}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    elem: Dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        elem[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        elem[init.name] = init.data_type
    producer = {o: n for n in g.node for o in n.output}

    # nodes kept in float32: Sin/Cos and the float cone feeding them
    keep: Set[int] = set()
    stack = [n for n in g.node if n.op_type in KEEP_FP32_OPS]
    while stack:
        n = stack.pop()
        if id(n) in keep:
            continue
        keep.add(id(n))
        for i in n.input:
            if elem.get(i) == FLOAT and i in producer:
                stack.append(producer[i])
    kept_inits = {i for n in g.node if id(n) in keep for i in n.input}

    def is_float(name: str) -> bool:
        return elem.get(name) == FLOAT

    # initializers used by converted nodes become float16 (a float32 copy stays for kept nodes)
    half_init: Dict[str, str] = {}
    new_inits = []
    for init in g.initializer:
        if init.data_type != FLOAT:
            new_inits.append(init)
            continue
        users_half = any(init.name in n.input and id(n) not in keep for n in g.node)
        if init.name in kept_inits or not users_half:
            new_inits.append(init)
        if users_half:
            arr = _half(numpy_helper.to_array(init))
            name = init.name if init.name not in kept_inits else init.name + "__fp16"
            new_inits.append(numpy_helper.from_array(arr, name))
            half_init[init.name] = name
    del g.initializer[:]
    g.initializer.extend(new_inits)

    casts = []
    cache: Dict[tuple, str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cache:
            out = f"{name}__to{'16' if to == HALF else '32'}"
            casts.append(helper.make_node("Cast", [name], [out], to=to, name=out + "_cast"))
            cache[key] = out
        return cache[key]

    graph_inputs = {i.name for i in g.input}
    # a float tensor's precision: produced by a converted node -> float16; kept node / graph input -> float32
    def precision(name: str) -> int:
        if name in half_init:
            return HALF
        if name in producer and id(producer[name]) not in keep:
            return HALF
        return FLOAT

    for n in g.node:
        half = id(n) not in keep
        for idx, i in enumerate(n.input):
            if not i or not is_float(i):
                continue
            want = HALF if half and (n.op_type, idx) not in FLOAT32_INPUTS else FLOAT
            if i in half_init:
                if want == HALF:
                    n.input[idx] = half_init[i]
                continue
            have = precision(i) if i not in graph_inputs else FLOAT
            if have != want:
                n.input[idx] = cast(i, want)
        if half:
            for a in n.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = HALF
                if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_half(numpy_helper.to_array(a.t)), a.t.name))
    # outputs stay float32
    for o in g.output:
        if o.type.tensor_type.elem_type == FLOAT and precision(o.name) == HALF:
            inner = o.name + "__fp16"
            for n in g.node:
                for k, x in enumerate(n.output):
                    if x == o.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == o.name:
                        n.input[k] = inner
            casts.append(helper.make_node("Cast", [inner], [o.name], to=FLOAT, name=o.name + "_out_cast"))
    nodes = list(g.node) + casts
    del g.node[:]
    g.node.extend(_toposort(nodes, {i.name for i in g.input} | {i.name for i in g.initializer}))
    del g.value_info[:]
    return model


def _half(a: np.ndarray) -> np.ndarray:
    """float32 -> float16, saturating at ±65504 (the −1e9 attention mask fill stays finite and still
    gives softmax weight 0)."""
    return np.clip(a, -65504.0, 65504.0).astype(np.float16)


def _toposort(nodes, available):
    have = set(available) | {""}
    out, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"fp16: cannot order {len(rest)} nodes (first {rest[0].op_type} {rest[0].name})")
        pending = rest
    return out
