"""Each merge method against its definition on small hand-checked tensors."""

from __future__ import annotations

import math

import pytest
import torch

from services.common.errors import InvalidArgument
from services.merger import methods
from services.merger.methods import TensorContext, parse_params

CTX = TensorContext("model.layers.0.mlp.up_proj.weight", num_layers=2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def run(name: str, base, inputs, **raw):
    method = methods.get(name)
    method.check_inputs(len(inputs), base is not None)
    return method.merge(base, inputs, parse_params(method, raw, len(inputs)), CTX)


def test_linear_weighted_average_and_plain_sum():
    inputs = [t(1, 2), t(3, 6)]
    assert torch.equal(run("linear", None, inputs, weights=[1, 3]), t(2.5, 5.0))
    summed = run("linear", None, inputs, weights=[1, 3], normalize=False)
    assert torch.equal(summed, t(10, 20))


def test_task_arithmetic_scales_the_sum_of_task_vectors():
    merged = run("task_arithmetic", t(1, 1), [t(2, 0), t(1, 3)], scale=0.5)
    assert torch.equal(merged, t(1.5, 1.5))


def test_ties_trims_elects_sign_and_takes_the_disjoint_mean():
    base = torch.zeros(4)
    inputs = [t(3, -1, 0.5, 2), t(-2, -4, 1, 1)]
    # trim to 50%: [3, 0, 0, 2] and [-2, -4, 0, 0]; signs of sums: + - 0 +
    assert torch.equal(run("ties", base, inputs, density=0.5), t(3, -4, 0, 2))
    # with density 1 nothing is trimmed: entry 2 averages 0.5 and 1 (both +)
    full = run("ties", base, inputs, density=1.0)
    assert torch.allclose(full, t(3, -2.5, 0.75, 1.5))


def test_dare_drops_at_random_rescales_survivors_and_is_seeded():
    base = torch.zeros(10_000)
    delta = torch.ones(10_000)
    a = run("dare_linear", base, [delta], density=0.25, seed=3)
    b = run("dare_linear", base, [delta], density=0.25, seed=3)
    c = run("dare_linear", base, [delta], density=0.25, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # mergekit's default: survivors restore the task vector's L1 norm exactly
    assert float(a.abs().sum()) == pytest.approx(10_000, rel=1e-5)
    assert 0.2 < float((a != 0).float().mean()) < 0.3
    paper = run(
        "dare_linear", base, [delta], density=0.25, seed=3, rescale_norm="density"
    )
    assert set(paper.unique().tolist()) == {0.0, 4.0}  # survivors / density
    assert torch.equal(paper != 0, a != 0)  # the same entries dropped
    assert abs(float(paper.mean()) - 1.0) < 0.1  # unbiased in expectation
    exact = run("dare_linear", t(1, 1), [t(2, 3)], density=1.0, scale=2.0)
    assert torch.equal(exact, t(3, 5))


def test_dare_ties_applies_sign_election_after_the_drop():
    base = torch.zeros(3)
    inputs = [t(1, -2, 3), t(-3, 2, 1)]
    # mergekit's defaults: no normalization, a zero sum elects +
    assert torch.equal(run("dare_ties", base, inputs, density=1.0), t(-3, 2, 4))
    paper = run(
        "dare_ties", base, inputs, density=1.0, normalize=True, zero_sign="drop"
    )
    assert torch.equal(paper, t(-3, 0, 2))


def test_ties_trim_count_and_per_model_settings():
    base = torch.zeros(10)
    tau = torch.arange(1.0, 11.0)
    # 0.35 * 10 = 3.5 entries: mergekit keeps int() = 3, round() keeps 4
    assert int((run("ties", base, [tau], density=0.35) != 0).sum()) == 3
    rounded = run("ties", base, [tau], density=0.35, trim="round")
    assert int((rounded != 0).sum()) == 4
    # per-model weights and densities; lambda is accepted for scale
    merged = run(
        "task_arithmetic",
        torch.zeros(2),
        [t(1, 1), t(2, 2)],
        weights=[1.0, 0.5],
        **{"lambda": 2.0},
    )
    assert torch.equal(merged, t(4, 4))
    dense = run("ties", base, [tau, tau], densities=[0.1, 1.0], weights=[1.0, 1.0])
    assert dense[0] == pytest.approx(1.0) and dense[9] == pytest.approx(10.0)


def test_gradients_and_filters_vary_a_parameter_over_the_model():
    params = parse_params(
        methods.get("task_arithmetic"),
        {
            "weights": [[0.0, 1.0]],
            "scale": [{"filter": "mlp", "value": 3.0}, {"value": 1.0}],
        },
        1,
    )
    method = methods.get("task_arithmetic")
    base, tau = torch.zeros(1), t(1)
    first = TensorContext("model.layers.0.self_attn.q_proj.weight", num_layers=3)
    middle = TensorContext("model.layers.1.mlp.up_proj.weight", num_layers=3)
    assert method.merge(base, [tau], params, first).item() == 0.0
    assert method.merge(base, [tau], params, middle).item() == pytest.approx(1.5)


def test_slerp_follows_the_great_circle_and_per_layer_t():
    v0, v1 = t(1, 0), t(0, 1)
    half = run("slerp", None, [v0, v1], t=0.5)
    assert torch.allclose(half, t(math.sqrt(0.5), math.sqrt(0.5)), atol=1e-6)
    assert torch.allclose(run("slerp", None, [v0, v1], t=0.0), v0)
    parallel = run("slerp", None, [t(1, 1), t(2, 2)], t=0.25)
    assert torch.allclose(parallel, t(1.25, 1.25))  # degenerates to lerp
    params = parse_params(methods.get("slerp"), {"t": 0.9, "t_by_layer": [0, 1]}, 2)
    layer1 = TensorContext("model.layers.1.self_attn.q_proj.weight", num_layers=3)
    assert params.t_for(layer1) == pytest.approx(0.5)
    assert params.t_for(TensorContext("model.norm.weight", num_layers=3)) == 0.9


def test_magnitude_prune_keeps_the_largest_task_vector_entries():
    merged = run("magnitude_prune", torch.zeros(4), [t(1, -5, 2, 0.5)], density=0.5)
    assert torch.equal(merged, t(0, -5, 2, 0))


@pytest.mark.parametrize(
    "name, raw, inputs, words",
    [
        ("ties", {"densty": 0.5}, 2, ["no parameter densty", "valid parameters"]),
        ("ties", {"density": 0.0}, 2, ["density must be in (0, 1]"]),
        ("ties", {"densities": [0.5, [0.2, 1.5]]}, 2, ["density must be in (0, 1]"]),
        ("ties", {"normalize": "yes"}, 2, ["must be true or false"]),
        ("ties", {"weights": [1, "a"]}, 2, ["weights[1] must be a finite number"]),
        ("ties", {"scale": 1, "lambda": 2}, 2, ["lambda or scale"]),
        ("della", {"rescale_norm": "l3"}, 2, ["rescale_norm must be one of"]),
        ("dare_linear", {"density": 1.5}, 2, ["density must be in (0, 1]"]),
        ("slerp", {"t": 1.2}, 2, ["t must be in [0, 1]"]),
        ("linear", {"weights": [1, 2, 3]}, 2, ["3 values but there are 2"]),
        ("linear", {"lambda": 2}, 2, ["no parameter lambda", "normalize"]),
    ],
)
def test_bad_parameters_are_precise_invalid_arguments(name, raw, inputs, words):
    with pytest.raises(InvalidArgument) as err:
        parse_params(methods.get(name), raw, inputs)
    for word in words:
        assert word in err.value.message


def test_unknown_method_and_wrong_input_counts_are_refused():
    with pytest.raises(InvalidArgument, match="valid methods: breadcrumbs"):
        methods.get("frankenmerge")
    with pytest.raises(InvalidArgument, match="exactly 2 input models, got 3"):
        methods.get("slerp").check_inputs(3, False)
    with pytest.raises(InvalidArgument, match="needs a base model"):
        methods.get("ties").check_inputs(2, False)
