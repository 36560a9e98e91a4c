"""benchmarks/baselines.py: per-channel quantisation, magnitude pruning and their bytes."""

import importlib.util
import pathlib

import numpy as np
import pytest

from nrnp.configs import default
from nrnp.nets import models

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / 'benchmarks' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baselines = _load('baselines')


def test_per_channel_quantisation_and_its_bytes():
    w = np.zeros((3, 3, 2, 4), np.float32)  # HWIO: 4 output channels
    w[..., 0] = 0.5
    w[0, 0, 0, 1], w[1, 1, 1, 1] = -1.0, 0.3
    w[..., 3] = np.linspace(-0.2, 0.2, 18).reshape(3, 3, 2)  # channel 2 stays all zero
    q8, stored8 = baselines.quantize_per_channel(w, 8)
    assert stored8 == 72 + 4 * 4  # 72 one-byte codes, 4 float32 scales
    np.testing.assert_allclose(q8[..., 0], 0.5, rtol=0, atol=1e-7)  # the peak is exact
    assert q8[0, 0, 0, 1] == -1.0 and abs(q8[1, 1, 1, 1] - 0.3) <= 1 / 127 / 2 + 1e-7
    np.testing.assert_array_equal(q8[..., 2], 0.0)
    assert np.max(np.abs(q8 - w)) <= 1 / 254 + 1e-7  # half a step of the widest channel
    q4, stored4 = baselines.quantize_per_channel(w, 4)
    assert stored4 == 36 + 16  # 72 codes of 4 bits packed two per byte
    assert len(np.unique(q4[..., 1])) <= 15  # 2^4 - 1 symmetric levels
    assert q4[1, 1, 1, 1] == pytest.approx(2 / 7)  # 0.3 rounds to 2 of 7 steps of 1/7


def test_magnitude_pruning_and_its_bytes():
    w = np.arange(1, 21, dtype=np.float32).reshape(1, 1, 4, 5) * np.where(
        np.arange(20) % 2, -1, 1
    ).reshape(1, 1, 4, 5)
    pruned, stored = baselines.prune_magnitude(w, 0.7)
    kept = np.abs(pruned[pruned != 0])
    assert sorted(kept.tolist()) == list(range(15, 21))  # the 6 largest of 20 survive
    assert stored == 6 * 4 + min(3, 6 * 2)  # float32 values + a 20-bit bitmap (3 bytes)
    big = np.random.default_rng(0).standard_normal((3, 3, 64, 128)).astype(np.float32)
    pruned, stored = baselines.prune_magnitude(big, 0.9)
    nnz = big.size - int(0.9 * big.size)
    assert np.count_nonzero(pruned) == nnz
    assert stored == 4 * nnz + min(big.size // 8, 4 * nnz)  # > 65,536 entries: uint32 indices


def test_bytes_of_a_tiny_net_count_convs_as_stored_and_copy_the_rest():
    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1))
    variables = {k: variables[k] for k in ('params', 'batch_stats')}
    represented = baselines.represented_paths(variables['params'], default.get_config().kernels)
    assert represented == {('params', f'conv{i}', 'kernel') for i in (1, 2, 3)}
    conv = 9 * (1 * 4 + 4 * 8 + 8 * 8)  # represented weights
    copied = 4 * (2 * 4 + 2 * 8 + 2 * 8) + 4 * (2 * 4 + 2 * 8 + 2 * 8) + 4 * (8 * 10 + 10)
    _, original = baselines.apply_method(variables, represented, 'original')
    assert original == {
        'stored_bytes': 4 * conv + copied,
        'conv_bytes': 4 * conv,
        'copied_bytes': copied,
        'original_bytes': 4 * conv + copied,
        'original_conv_bytes': 4 * conv,
    }
    rewritten, ptq8 = baselines.apply_method(variables, represented, 'ptq8')
    assert ptq8['conv_bytes'] == conv + 4 * (4 + 8 + 8)
    assert ptq8['stored_bytes'] == ptq8['conv_bytes'] + copied
    np.testing.assert_array_equal(  # copied leaves untouched
        rewritten['batch_stats']['bn1']['var'], variables['batch_stats']['bn1']['var']
    )
    _, prune = baselines.apply_method(variables, represented, 'prune50')
    layers = [9 * 4, 9 * 32, 9 * 64]
    expected = sum(4 * (n - n // 2) + min(-(-n // 8), 2 * (n - n // 2)) for n in layers)
    assert prune['conv_bytes'] == expected
    pruned, gprune = baselines.apply_method(variables, represented, 'gprune70')
    kept = [np.count_nonzero(pruned['params'][f'conv{i}']['kernel']) for i in (1, 2, 3)]
    assert sum(kept) == conv - int(0.7 * conv)  # one threshold over all three convs
    assert gprune['conv_bytes'] == sum(
        4 * k + min(-(-n // 8), 2 * k) for k, n in zip(kept, layers, strict=True)
    )


def test_curve_variants_and_their_configs():
    curve = _load('curve')
    chosen = curve.variants([140], ['180-140'], ['distill'], ['none', 'int8'], True)
    assert [v['name'] for v in chosen] == [
        'h140_distill',
        'h140_distill_int8',
        'r180-140_distill',
        'r180-140_distill_int8',
    ]
    plain = curve.variants([140], ['180-140'], ['recon', 'distill'], ['none', 'int8'])
    assert [v['name'] for v in plain] == [  # quantised: one width only
        'h140_recon',
        'h140_recon_int8',
        'h140_distill',
        'h140_distill_int8',
        'r180-140_recon',
        'r180-140_distill',
    ]
    args = curve.argparse.Namespace(target='resnet20', test_limit=0, steps=10, distill_steps=2)
    c = curve.variant_config(args, '/shared', chosen[2])
    assert c.reconstruct.round_hidden == (180, 140) and c.predictor.hidden == 140
    assert c.distill.steps == 2 and c.reconstruct.steps == 10
    both = curve.variants([140], [], ['distill'], ['none'], recalibrate=('on', 'off'))
    assert [v['name'] for v in both] == ['h140_distill', 'h140_distill_norecal']
    assert curve.variant_config(args, '/shared', both[1]).recalibrate.images == 0
    assert curve.variant_config(args, '/shared', both[0]).recalibrate.images > 0
    uneven = curve.variants([], ['180-140@6-4'], ['recon'], ['none'])[0]
    assert uneven['name'] == 'r180-140@6-4_recon'
    c = curve.variant_config(args, '/shared', uneven)
    assert c.reconstruct.round_steps == (6, 4) and c.distill.steps == 0
    assert curve.variant_config(args, '/shared', chosen[1]).predictor.quantize == 'int8'
    assert curve.variant_config(args, '/shared', chosen[0]).predictor.quantize == 'none'


@pytest.mark.parametrize('method', ['fp16', 'cq4', 'gq3'])
def test_baselines_stored_as_nrnp_stores_its_predictor(method):
    from nrnp.artifact import storage
    from nrnp.core import quantize

    model = models.build_model('smallcnn', 10, widths=(4, 8, 8))
    variables = models.init_variables(model, (1, 8, 8, 1))
    variables = {k: variables[k] for k in ('params', 'batch_stats')}
    represented = baselines.represented_paths(variables['params'], default.get_config().kernels)
    _, original = baselines.apply_method(variables, represented, 'original')
    rewritten, sizes = baselines.apply_method(variables, represented, method)
    assert sizes['copied_bytes'] == original['copied_bytes'] // 2  # float16 copies
    var = variables['batch_stats']['bn1']['var']
    np.testing.assert_array_equal(rewritten['batch_stats']['bn1']['var'], var.astype(np.float16))
    w = variables['params']['conv2']['kernel']  # [3, 3, 4, 8]
    if method == 'fp16':
        assert sizes['conv_bytes'] == original['conv_bytes'] // 2
        np.testing.assert_array_equal(rewritten['params']['conv2']['kernel'], w.astype(np.float16))
        return
    scheme = quantize.Scheme(f'int{method[2:]}', 16 if method[0] == 'g' else 0)
    leaves = {
        p: quantize.quantize_leaf(
            variables['params'][p[1]]['kernel'].reshape(
                -1, variables['params'][p[1]]['kernel'].shape[-1]
            ),
            scheme,
        )
        for p in sorted(represented)
    }
    assert sizes['conv_bytes'] == storage.pack_predictor(leaves, 4)[0].nbytes
    assert sizes['stored_bytes'] == sizes['conv_bytes'] + sizes['copied_bytes']
    want = quantize.dequantize_leaf(leaves[('params', 'conv2', 'kernel')]).reshape(w.shape)
    np.testing.assert_array_equal(rewritten['params']['conv2']['kernel'], want)
    group = want.reshape(-1, 8)[: 16 if method[0] == 'g' else None, 0]  # one scale's values
    assert len(np.unique(group)) <= 2 ** int(method[2:]) - 1
