"""KServe payload parsing: every accepted V1/V2 form, every rejection reason, and round trips.

Oracles: the rows a test encodes are the rows parsing must give back (numbers as floats,
categories as strings); split_columns is checked against numpy indexing of the same table.
"""
from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmonitor.core import payload_rows, payload_tensors, payloads
from modelmonitor.core.payload_rows import MAX_MAGNITUDE
from modelmonitor.core.payloads import PayloadError, parse_request, parse_response, split_columns
from modelmonitor.core.spec import Feature

IRIS_NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
IRIS = tuple(Feature(name, "numerical", i) for i, name in enumerate(IRIS_NAMES))
MIXED = (Feature("age", "numerical", 0), Feature("city", "categorical", 1),
         Feature("income", "numerical", 2), Feature("member", "categorical", 3))
PREDICTION = (Feature("prediction", "numerical", 0),)
SPECIES = (Feature("species", "categorical", 0),)

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]


def tensor(name, shape, datatype, data, **extra):
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def test_module_docstring_examples_run():
    for module in (payloads, payload_rows, payload_tensors):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --------------------------------------------------------------------------------------------
# V1 requests


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_v1_rows_as_lists(key):
    body = json.dumps({key: ROWS})
    assert parse_request(body, IRIS) == ROWS
    assert parse_request(body.encode(), IRIS) == ROWS
    assert parse_request(json.loads(body), IRIS) == ROWS


def test_v1_values_are_python_floats_and_ints_become_floats():
    rows = parse_request({"instances": [[5, 3, 1, 0]]}, IRIS)
    assert rows == [[5.0, 3.0, 1.0, 0.0]]
    assert all(type(v) is float for v in rows[0])


def test_v1_rows_as_objects_in_any_key_order_with_extra_keys_ignored():
    instances = [{"petal_width": r[3], "sepal_length": r[0], "note": "x", "petal_length": r[2],
                  "sepal_width": r[1], "id": 7} for r in ROWS]
    assert parse_request({"instances": instances}, IRIS) == ROWS


def test_v1_lists_and_objects_may_mix():
    instances = [ROWS[0], dict(zip(IRIS_NAMES, ROWS[1])), ROWS[2]]
    assert parse_request({"instances": instances}, IRIS) == ROWS


def test_v1_single_feature_flat_list_of_scalars():
    one = (Feature("x", "numerical", 0),)
    assert parse_request({"instances": [1.5, 2, 3.25]}, one) == [[1.5], [2.0], [3.25]]
    assert parse_request({"instances": [[1.5], [2]]}, one) == [[1.5], [2.0]]
    assert parse_request({"instances": [{"x": 4}]}, one) == [[4.0]]


def test_v1_booleans_into_numerical_features_are_zero_and_one():
    assert parse_request({"instances": [[True, False, 1.0, 2.0]]}, IRIS) == [[1.0, 0.0, 1.0, 2.0]]


def test_v1_categorical_values_strings_ints_bools_and_missing():
    instances = [[30, "Oslo", 1.5, True], [41, None, 2, "gold"], {"age": 19, "income": 0.5, "city": 7}]
    assert parse_request({"instances": instances}, MIXED) == [
        [30.0, "Oslo", 1.5, "True"], [41.0, None, 2.0, "gold"], [19.0, "7", 0.5, None]]


def test_v1_large_batch_matches_numpy_and_the_per_row_path():
    rng = np.random.default_rng(7)
    table = rng.normal(size=(10_000, 4))
    table[::3, 1] = np.round(table[::3, 1] * 10)  # some integral values, sent as JSON ints below
    instances = [[int(v) if v.is_integer() else v for v in row] for row in table.tolist()]
    rows = parse_request(json.dumps({"instances": instances}), IRIS)
    assert rows == table.tolist()
    assert all(type(v) is float for v in rows[123])


def test_v1_large_batch_with_booleans_takes_the_careful_path():
    instances = [[1.0, 2.0, 3.0, 4.0]] * 50 + [[True, 2.0, 3.0, 4.0]]
    rows = parse_request({"instances": instances}, IRIS)
    assert rows[-1] == [1.0, 2.0, 3.0, 4.0] and len(rows) == 51


@pytest.mark.parametrize("bad, reason", [
    ("abc", "instance 7777 feature 'petal_length': 'abc' is not a number"),
    (None, "instance 7777 feature 'petal_length' is null"),
    (math.nan, "instance 7777 feature 'petal_length': NaN is not a finite number"),
    (math.inf, "instance 7777 feature 'petal_length': Infinity is not a finite number"),
    (1.7e308, "instance 7777 feature 'petal_length': 1.7e+308 is beyond +-1e+100"),
    (-2 * 10 ** 101, "instance 7777 feature 'petal_length': -2e+101 is beyond +-1e+100"),
])
def test_v1_large_batch_error_names_the_offending_instance(bad, reason):
    instances = np.ones((10_000, 4)).tolist()
    instances[7777][2] = bad
    with pytest.raises(PayloadError) as err:
        parse_request(json.dumps({"instances": instances}), IRIS)
    assert err.value.reason.startswith(reason)


@pytest.mark.parametrize("n", [1, 10_000])   # the per-row fast path and the NumPy path
@pytest.mark.parametrize("value, accepted", [(1e100, True), (-1e100, True), (1.0000000000000002e100, False),
                                             (-1e200, False), (10 ** 100, True), (10 ** 101, False)])
def test_values_beyond_the_largest_magnitude_are_refused(n, value, accepted):
    """1e308 is finite but overflows M2, co-moments and z-scores to infinity, which no event
    can carry: the bound is checked with the value, on every path, in both V1 and V2."""
    instances = np.ones((n, 4)).tolist()
    instances[n - 1][0] = value
    for body in ({"instances": instances},
                 {"inputs": [tensor("input-0", [n, 4], "FP64", [v for row in instances for v in row])]}):
        if accepted:
            assert parse_request(body, IRIS)[n - 1][0] == float(value)
        else:
            with pytest.raises(PayloadError, match=r"is beyond \+-1e\+100"):
                parse_request(body, IRIS)
    matrix_rows = [[value, 1.0, 1.0, 1.0]]
    if accepted:
        assert split_columns(matrix_rows, IRIS)[0][0, 0] == float(value)
    else:
        with pytest.raises(PayloadError, match="beyond"):
            split_columns(matrix_rows, IRIS)


def test_v1_large_batch_wrong_width_names_the_instance():
    instances = np.ones((1000, 4)).tolist()
    instances[512] = [1.0, 2.0, 3.0]
    with pytest.raises(PayloadError, match=r"^instance 512 has 3 values, expected 4 \(sepal_length"):
        parse_request({"instances": instances}, IRIS)


# --------------------------------------------------------------------------------------------
# V2 requests


def test_v2_one_tensor_flat_row_major():
    flat = [v for row in ROWS for v in row]
    body = {"id": "r1", "inputs": [tensor("input-0", [3, 4], "FP32", flat)]}
    assert parse_request(body, IRIS) == ROWS


def test_v2_one_tensor_nested():
    body = {"inputs": [tensor("input-0", [3, 4], "FP64", ROWS, parameters={"content_type": "np"})]}
    assert parse_request(body, IRIS) == ROWS


def test_v2_one_tensor_integer_and_bool_datatypes():
    body = {"inputs": [tensor("x", [1, 4], "INT64", [5, 3, 1, 0])]}
    assert parse_request(body, IRIS) == [[5.0, 3.0, 1.0, 0.0]]
    body = {"inputs": [tensor("x", [1, 4], "BOOL", [True, False, True, True])]}
    assert parse_request(body, IRIS) == [[1.0, 0.0, 1.0, 1.0]]


def test_v2_one_input_per_feature_in_any_order_with_extra_inputs_ignored():
    columns = list(zip(*ROWS))
    inputs = [tensor(name, [3], "FP32", list(columns[j])) for j, name in enumerate(IRIS_NAMES)]
    inputs.reverse()
    inputs.append(tensor("debug", [1], "BYTES", ["ignored"]))
    assert parse_request({"inputs": inputs}, IRIS) == ROWS


def test_v2_per_feature_inputs_of_shape_n_by_1_flat_or_nested():
    columns = list(zip(*ROWS))
    inputs = [tensor(name, [3, 1], "FP64", [[v] for v in columns[j]] if j % 2 else list(columns[j]))
              for j, name in enumerate(IRIS_NAMES)]
    assert parse_request({"inputs": inputs}, IRIS) == ROWS


def test_v2_bytes_inputs_feed_categorical_features():
    body = {"inputs": [
        tensor("member", [2], "BYTES", ["gold", None]),
        tensor("city", [2, 1], "BYTES", [["Oslo"], ["Lima"]]),
        tensor("income", [2], "FP32", [1.5, 2.5]),
        tensor("age", [2], "INT32", [30, 41]),
    ]}
    assert parse_request(body, MIXED) == [[30.0, "Oslo", 1.5, "gold"], [41.0, "Lima", 2.5, None]]


def test_v2_integer_tensor_feeds_a_mixed_schema_as_one_tensor():
    body = {"inputs": [tensor("t", [2, 4], "INT64", [30, 1, 2, 3, 40, 5, 6, 7])]}
    assert parse_request(body, MIXED) == [[30.0, "1", 2.0, "3"], [40.0, "5", 6.0, "7"]]


def test_v2_single_tensor_feeds_a_single_feature_whatever_its_name():
    one = (Feature("x", "numerical", 0),)
    assert parse_request({"inputs": [tensor("input-0", [3], "FP32", [1, 2, 3])]}, one) == [[1.0], [2.0], [3.0]]
    assert parse_request({"inputs": [tensor("input-0", [2, 1], "FP32", [[1], [2]])]}, one) == [[1.0], [2.0]]


def test_v1_inputs_of_objects_are_not_mistaken_for_v2_tensors():
    # A feature literally named "data" next to "shape": still a V1 object keyed by feature names.
    schema = (Feature("data", "numerical", 0), Feature("shape", "numerical", 1))
    assert parse_request({"inputs": [{"data": 1, "shape": 2}]}, schema) == [[1.0, 2.0]]


def test_v2_large_flat_tensor_matches_numpy():
    rng = np.random.default_rng(3)
    table = rng.uniform(0, 8, size=(10_000, 4))
    body = {"inputs": [tensor("input-0", [10_000, 4], "FP64", table.ravel().tolist())]}
    assert parse_request(json.dumps(body), IRIS) == table.tolist()


# --------------------------------------------------------------------------------------------
# Responses


def test_v1_response_scalars_lists_and_objects():
    assert parse_response('{"predictions": [0, 2, 1]}', PREDICTION) == [[0.0], [2.0], [1.0]]
    assert parse_response({"predictions": [[1], [0]]}, PREDICTION) == [[1.0], [0.0]]
    two = (Feature("label", "categorical", 0), Feature("score", "numerical", 1))
    assert parse_response({"predictions": [["cat", 0.9], {"score": 0.4, "label": "dog", "x": 1}]}, two) == [
        ["cat", 0.9], ["dog", 0.4]]
    assert parse_response({"predictions": ["setosa", 2]}, SPECIES) == [["setosa"], ["2"]]


def test_v2_response_single_output_whatever_its_name():
    body = {"model_name": "iris", "id": "1", "outputs": [tensor("output-0", [3], "INT64", [0, 1, 2])]}
    assert parse_response(body, PREDICTION) == [[0.0], [1.0], [2.0]]
    body["outputs"][0]["shape"] = [3, 1]
    assert parse_response(body, SPECIES) == [["0"], ["1"], ["2"]]


def test_v2_response_outputs_matched_by_name():
    two = (Feature("label", "categorical", 0), Feature("score", "numerical", 1))
    body = {"outputs": [tensor("score", [2], "FP32", [0.9, 0.4]), tensor("label", [2], "BYTES", ["a", "b"]),
                        tensor("probabilities", [2, 3], "FP32", [0.1] * 6)]}
    assert parse_response(body, two) == [["a", 0.9], ["b", 0.4]]


def test_v2_response_one_tensor_with_one_column_per_prediction():
    two = (Feature("p0", "numerical", 0), Feature("p1", "numerical", 1))
    body = {"outputs": [tensor("probabilities", [2, 2], "FP32", [0.3, 0.7, 0.6, 0.4])]}
    assert parse_response(body, two) == [[0.3, 0.7], [0.6, 0.4]]


def test_v1_style_outputs_rows_in_a_response():
    assert parse_response({"outputs": [[1], [2]]}, PREDICTION) == [[1.0], [2.0]]


# --------------------------------------------------------------------------------------------
# Rejections: each reason says exactly what is wrong and where.

REQUEST_REJECTIONS = [
    # (id, body, features, expected reason or a fragment of it)
    ("wrong width", {"instances": [ROWS[0]] * 3 + [[1, 2, 3, 4, 5]]}, IRIS,
     "instance 3 has 5 values, expected 4 (sepal_length, sepal_width, petal_length, petal_width)"),
    ("not a number", {"instances": [[5.1, "abc", 1.4, 0.2]]}, IRIS,
     "instance 0 feature 'sepal_width': 'abc' is not a number"),
    ("numeric string", {"instances": [[5.1, 3.5, "1.4", 0.2]]}, IRIS,
     "instance 0 feature 'petal_length': '1.4' is not a number"),
    ("missing feature", {"instances": [dict(zip(IRIS_NAMES, r)) for r in ROWS]
                         + [{"sepal_length": 1, "sepal_width": 2, "petal_length": 3}]}, IRIS,
     "instance 3 lacks feature 'petal_width'"),
    ("NaN", '{"instances": [[5.1, NaN, 1.4, 0.2]]}', IRIS,
     "instance 0 feature 'sepal_width': NaN is not a finite number"),
    ("inf", '{"instances": [[5.1, 3.5, Infinity, 0.2]]}', IRIS,
     "instance 0 feature 'petal_length': Infinity is not a finite number"),
    ("-inf", '{"instances": [[5.1, 3.5, 1.4, -Infinity]]}', IRIS,
     "instance 0 feature 'petal_width': -Infinity is not a finite number"),
    ("null numerical", {"instances": [[5.1, None, 1.4, 0.2]]}, IRIS,
     "instance 0 feature 'sepal_width' is null: a numerical feature needs a number"),
    ("null numerical in object", {"instances": [{"age": None, "city": "x", "income": 1, "member": "y"}]}, MIXED,
     "instance 0 feature 'age' is null"),
    ("list value", {"instances": [[5.1, [3.5], 1.4, 0.2]]}, IRIS,
     "instance 0 feature 'sepal_width': [3.5] is not a number (got a list, expected a single value)"),
    ("huge integer", {"instances": [[5.1, 10 ** 400, 1.4, 0.2]]}, IRIS,
     "instance 0 feature 'sepal_width'"),
    ("float category", {"instances": [[1, 2.5, 3, "x"]]}, MIXED,
     "instance 0 feature 'city': 2.5 is not a category (expected a string, an integer or a boolean)"),
    ("object category", {"instances": [[1, {"a": 1}, 3, "x"]]}, MIXED,
     "instance 0 feature 'city': {'a': 1} is not a category (got an object"),
    ("instance a scalar", {"instances": [ROWS[0], 5.1]}, IRIS,
     "instance 1 is a number (5.1), expected a list of 4 values (sepal_length, sepal_width, petal_length, "
     "petal_width) or an object keyed by feature name"),
    ("not JSON", b'{"instances": [[5.1, 3.5,', IRIS, "body is not JSON: "),
    ("not UTF-8", b'\xff\xfe\xfa', IRIS, "body is not JSON: "),
    ("empty body", b"", IRIS, "empty body: expected a JSON KServe request"),
    ("JSON list", "[[5.1, 3.5, 1.4, 0.2]]", IRIS, "expected a JSON object (KServe request), got a list"),
    ("unknown form", {"data": {"ndarray": [[1, 2, 3, 4]]}}, IRIS,
     "not a KServe request: expected {'instances': [...]} or {'inputs': [...]} (V1) or V2"),
    ("empty batch", {"instances": []}, IRIS, "empty batch: 'instances' holds no instances"),
    ("empty inputs", {"inputs": []}, IRIS, "empty batch: 'inputs' holds no instances"),
    ("instances not a list", {"instances": {"sepal_length": 1}}, IRIS,
     "'instances' must be a list of instances, got an object"),
    ("both keys", {"instances": ROWS, "inputs": ROWS}, IRIS, "request has both 'instances' and 'inputs'"),
    ("columnar inputs", {"inputs": {"sepal_length": [1]}}, IRIS, "'inputs' is an object (TensorFlow columnar form)"),
    ("body type", 42, IRIS, "body must be bytes, str or a dict, got int"),
    # V2
    ("V2 empty batch", {"inputs": [tensor("x", [0, 4], "FP32", [])]}, IRIS, "empty batch: inputs[0] 'x' has shape [0, 4]"),
    ("V2 no name", {"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, IRIS,
     "inputs[0] lacks 'name' (a non-empty string)"),
    ("V2 no datatype", {"inputs": [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, IRIS,
     "inputs[0] 'x' lacks 'datatype'"),
    ("V2 unknown datatype", {"inputs": [tensor("x", [1, 4], "FLOAT", [1, 2, 3, 4])]}, IRIS,
     "inputs[0] 'x': datatype 'FLOAT' is not an Open Inference Protocol datatype (BOOL, INT8, INT16"),
    ("V2 no shape", {"inputs": [{"name": "x", "datatype": "FP32", "data": [1, 2, 3, 4]}]}, IRIS,
     "inputs[0] 'x': shape must be a non-empty list of non-negative integers, got None"),
    ("V2 negative shape", {"inputs": [tensor("x", [-1, 4], "FP32", [1, 2, 3, 4])]}, IRIS,
     "inputs[0] 'x': shape must be a non-empty list of non-negative integers, got [-1, 4]"),
    ("V2 data not a list", {"inputs": [tensor("x", [1, 4], "FP32", "1,2,3,4")]}, IRIS,
     "inputs[0] 'x': data must be a list, got a string"),
    ("V2 count mismatch", {"inputs": [tensor("x", [2, 4], "FP32", [1, 2, 3, 4, 5, 6, 7])]}, IRIS,
     "inputs[0] 'x': data has 7 values but shape [2, 4] holds 8"),
    ("V2 nested mismatch", {"inputs": [tensor("x", [2, 4], "FP32", [[1, 2, 3, 4], [5, 6, 7]])]}, IRIS,
     "inputs[0] 'x': nested data has 3 entries at depth 1, shape [2, 4] says 4"),
    ("V2 nested too deep", {"inputs": [tensor("x", [2], "FP32", [[1, 2], [3, 4]])]}, (Feature("v", "numerical", 0),),
     "inputs[0] 'x': nested data is deeper than shape [2]"),
    ("V2 second input not an object", {"inputs": [tensor("sepal_length", [1], "FP32", [1]), 5]}, IRIS,
     "inputs[1] is a number, expected a tensor object"),
    ("V2 one tensor of the wrong width", {"inputs": [tensor("input-0", [1, 5], "FP32", [1, 2, 3, 4, 5])]}, IRIS,
     "inputs[0] 'input-0' has shape [1, 5], expected [n, 4] (sepal_length, sepal_width, petal_length, petal_width)"
     " or one input per feature of shape [n]"),
    ("V2 rank 3", {"inputs": [tensor("input-0", [1, 2, 2], "FP32", [1, 2, 3, 4])]}, IRIS,
     "inputs[0] 'input-0' has shape [1, 2, 2], expected [n, 4]"),
    ("V2 missing feature input", {"inputs": [tensor(n, [1], "FP32", [1.0]) for n in IRIS_NAMES[:3]]}, IRIS,
     "no input named 'petal_width' (one input per feature is expected; inputs: 'sepal_length', 'sepal_width', "
     "'petal_length')"),
    ("V2 lengths differ", {"inputs": [tensor(n, [2 if n != "petal_length" else 3], "FP32",
                                             [1.0] * (2 if n != "petal_length" else 3)) for n in IRIS_NAMES]}, IRIS,
     "inputs disagree on the batch size: inputs[0] 'sepal_length' has 2 values, inputs[2] 'petal_length' has 3"),
    ("V2 per-feature wrong shape", {"inputs": [tensor(n, [1, 2] if n == "sepal_width" else [1], "FP32",
                                                      [1.0, 2.0] if n == "sepal_width" else [1.0])
                                               for n in IRIS_NAMES]}, IRIS,
     "inputs[1] 'sepal_width' has shape [1, 2], expected [n] or [n, 1] (one value per instance)"),
    ("V2 duplicate names", {"inputs": [tensor("sepal_length", [1], "FP32", [1.0]),
                                       tensor("sepal_length", [1], "FP32", [2.0])]}, IRIS,
     "inputs[0] and inputs[1] are both named 'sepal_length'"),
    ("V2 BYTES into numerical", {"inputs": [tensor("x", [1, 4], "BYTES", ["1", "2", "3", "4"])]}, IRIS,
     "inputs[0] 'x': datatype BYTES (strings) cannot feed numerical feature 'sepal_length'"),
    ("V2 FP into categorical", {"inputs": [tensor("age", [1], "FP32", [1.0]), tensor("city", [1], "FP32", [2.0]),
                                           tensor("income", [1], "FP32", [1.0]), tensor("member", [1], "BYTES", ["a"])]},
     MIXED, "inputs[1] 'city': datatype FP32 cannot feed categorical feature 'city' (use BYTES, an integer type or BOOL)"),
    ("V2 value not a number", {"inputs": [tensor("x", [1, 4], "FP32", [1, "two", 3, 4])]}, IRIS,
     "instance 0 feature 'sepal_width': 'two' is not a number"),
    ("V2 NaN value", '{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", '
                     '"data": [1, 2, 3, 4, 5, 6, NaN, 8]}]}', IRIS,
     "instance 1 feature 'petal_length': NaN is not a finite number"),
]


@pytest.mark.parametrize("body, features, reason", [r[1:] for r in REQUEST_REJECTIONS],
                         ids=[r[0] for r in REQUEST_REJECTIONS])
def test_request_rejections_say_exactly_what_is_wrong(body, features, reason):
    with pytest.raises(PayloadError) as err:
        parse_request(body, features)
    assert isinstance(err.value, ValueError)
    assert err.value.reason.startswith(reason), err.value.reason
    assert str(err.value) == err.value.reason


RESPONSE_REJECTIONS = [
    ("no predictions", {"model_name": "iris"}, PREDICTION,
     "not a KServe response: expected {'predictions': [...]} (V1) or {'outputs': [{name, shape, datatype, data}]}"),
    ("empty predictions", {"predictions": []}, PREDICTION, "empty batch: 'predictions' holds no predictions"),
    ("probabilities for one output", {"predictions": [[0.1, 0.8, 0.1]]}, PREDICTION,
     "prediction 0 has 3 values, expected 1 (prediction)"),
    ("missing output in object", {"predictions": [{"score": 1}]}, PREDICTION, "prediction 0 lacks output 'prediction'"),
    ("string prediction", {"predictions": ["setosa"]}, PREDICTION,
     "prediction 0 output 'prediction': 'setosa' is not a number"),
    ("V2 wrong shape", {"outputs": [tensor("output-0", [2, 3], "FP32", [0.1] * 6)]}, PREDICTION,
     "outputs[0] 'output-0' has shape [2, 3], expected [n, 1] (prediction) or [n]"),
    ("V2 missing named output", {"outputs": [tensor("a", [1], "FP32", [1.0]), tensor("b", [1], "FP32", [1.0])]},
     PREDICTION, "no output named 'prediction' (one output per prediction is expected; outputs: 'a', 'b')"),
    ("V2 one output tensor of the wrong width", {"outputs": [tensor("scores", [2], "FP32", [0.1, 0.2])]},
     (Feature("p0", "numerical", 0), Feature("p1", "numerical", 1)),
     "outputs[0] 'scores' has shape [2], expected [n, 2] (p0, p1) or one output per prediction of shape [n]"),
    ("both keys", {"predictions": [1], "outputs": [1]}, PREDICTION, "response has both 'predictions' and 'outputs'"),
]


@pytest.mark.parametrize("body, features, reason", [r[1:] for r in RESPONSE_REJECTIONS],
                         ids=[r[0] for r in RESPONSE_REJECTIONS])
def test_response_rejections_say_exactly_what_is_wrong(body, features, reason):
    with pytest.raises(PayloadError) as err:
        parse_response(body, features)
    assert err.value.reason.startswith(reason), err.value.reason


def test_no_features_is_a_clear_error():
    with pytest.raises(PayloadError, match="no features to parse into"):
        parse_response({"predictions": [1]}, ())


def test_a_list_of_features_is_accepted_and_not_cached_stale():
    features = list(IRIS)
    assert parse_request({"instances": [ROWS[0]]}, features) == [ROWS[0]]
    features.pop()
    with pytest.raises(PayloadError, match="has 4 values, expected 3"):
        parse_request({"instances": [ROWS[0]]}, features)


# --------------------------------------------------------------------------------------------
# split_columns


def test_split_columns_matches_numpy_column_selection():
    rng = np.random.default_rng(11)
    n = 500
    numbers = rng.normal(size=(n, 2))
    cities = rng.choice(["Oslo", "Lima", "Rome"], size=n).tolist()
    members = [None if i % 7 == 0 else str(i % 3) for i in range(n)]
    rows = [[numbers[i, 0], cities[i], numbers[i, 1], members[i]] for i in range(n)]
    matrix, categorical = split_columns(rows, MIXED)
    assert matrix.dtype == np.float64 and matrix.shape == (n, 2) and matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix, np.array([[r[0], r[2]] for r in rows]))
    assert categorical == [cities, members]


def test_split_columns_all_numerical_and_empty():
    rng = np.random.default_rng(12)
    table = rng.normal(size=(100, 4))
    matrix, categorical = split_columns(table.tolist(), IRIS)
    np.testing.assert_array_equal(matrix, table)
    assert categorical == []
    matrix, categorical = split_columns([], MIXED)
    assert matrix.shape == (0, 2) and categorical == [[], []]
    only_categorical = (Feature("c", "categorical", 0),)
    matrix, categorical = split_columns([["a"], [None]], only_categorical)
    assert matrix.shape == (2, 0) and categorical == [["a", None]]


def test_split_columns_rejects_rows_of_the_wrong_width():
    with pytest.raises(PayloadError, match=r"row 1 has 3 values, expected 4"):
        split_columns([[1.0, "a", 2.0, "b"], [1.0, "a", 2.0]], MIXED)
    with pytest.raises(PayloadError, match=r"rows have shape \[2, 3\], expected \[2, 4\] \(sepal_length"):
        split_columns([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], IRIS)
    with pytest.raises(PayloadError, match=r"rows do not form an \(n, 4\) numeric table"):
        split_columns([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]], IRIS)


# --------------------------------------------------------------------------------------------
# Round trips: rows -> every V1 / V2 encoding -> parse == rows

finite = st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE, allow_nan=False, allow_infinity=False, width=64)
integers = st.integers(min_value=-(2 ** 53), max_value=2 ** 53)
category = st.one_of(st.none(), st.text(max_size=8))


@st.composite
def tables(draw):
    types = draw(st.lists(st.sampled_from(["numerical", "categorical"]), min_size=1, max_size=5))
    features = tuple(Feature(f"f{i}", t, i) for i, t in enumerate(types))
    n = draw(st.integers(min_value=1, max_value=12))
    sent = [[draw(st.one_of(finite, integers)) if t == "numerical" else draw(category) for t in types]
            for _ in range(n)]
    return features, sent


def expected_rows(sent, features):
    return [[float(v) if f.type == "numerical" else v for v, f in zip(row, features)] for row in sent]


def encodings(features, sent):
    names = [f.name for f in features]
    k, n = len(features), len(sent)
    yield "v1 lists", {"instances": sent}
    yield "v1 inputs", {"inputs": sent}
    yield "v1 objects", {"instances": [dict(zip(names, row)) for row in sent]}
    if k == 1:
        yield "v1 scalars", {"instances": [row[0] for row in sent]}
    types = {f.type for f in features}
    if len(types) == 1:
        datatype = "FP64" if types == {"numerical"} else "BYTES"
        flat = [v for row in sent for v in row]
        yield "v2 flat", {"inputs": [tensor("input-0", [n, k], datatype, flat)]}
        yield "v2 nested", {"inputs": [tensor("input-0", [n, k], datatype, sent)]}
    columns = list(zip(*sent))
    per_feature = [tensor(f.name, [n], "FP64" if f.type == "numerical" else "BYTES", list(columns[j]))
                   for j, f in enumerate(features)]
    yield "v2 per feature", {"inputs": per_feature[::-1]}
    nested = [dict(t, shape=[n, 1], data=[[v] for v in t["data"]]) for t in per_feature]
    yield "v2 per feature [n,1]", {"inputs": nested}


@settings(max_examples=150, deadline=None)
@given(tables())
def test_rows_round_trip_through_every_encoding(table):
    features, sent = table
    want = expected_rows(sent, features)
    for form, body in encodings(features, sent):
        got = parse_request(json.dumps(body), features)
        assert got == want, form
        assert all(type(v) is float for row in got for v, f in zip(row, features) if f.type == "numerical"), form
    predictions_body = {"predictions": sent}
    assert parse_response(json.dumps(predictions_body), features) == want
