"""The default CPU schedule of kernels no tuning record covers (tvm_cruise.schedules.cpu)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tvm import tirx

import tvm_cruise
from tvm_cruise.autotune.host import prepared_host_module
from tvm_cruise.pipeline import host_kernels
from tvm_cruise.schedules.cpu import ATTR, apply_default_schedules, schedule_kernel

from conftest import run_cli


class Zoo(torch.nn.Module):
    """One model whose host kernels cover the op kinds a CPU build meets: convolutions
    (strided, depthwise, 1x1), dense at batch 1, batched matmul, softmax, layer norm,
    pools, element-wise, concat, transpose."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.strided = torch.nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.depthwise = torch.nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.pointwise = torch.nn.Conv2d(24, 32, 1)
        self.fc = torch.nn.Linear(32, 40)
        self.norm = torch.nn.LayerNorm(20)

    def forward(self, x, seq):
        y = torch.relu(self.conv(x))
        y = torch.nn.functional.max_pool2d(y, 2) + torch.nn.functional.avg_pool2d(y, 2)
        y = torch.relu(self.depthwise(self.strided(y))) * 0.5
        y = self.pointwise(y)
        head = self.fc(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))
        attn = torch.softmax(seq @ seq.transpose(1, 2) / 4.0, dim=-1) @ seq
        mixed = torch.cat([self.norm(attn), seq], dim=-1)
        return head, mixed


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(0)
    return Zoo().eval(), (torch.randn(1, 3, 32, 48), torch.randn(2, 12, 20))


@pytest.fixture(scope="module")
def zoo_builds(zoo):
    model, inputs = zoo
    plain = tvm_cruise.build(model, target="llvm", example_inputs=inputs, tuning_logs=False,
                             default_schedules=False)
    default = tvm_cruise.build(model, target="llvm", example_inputs=inputs, tuning_logs=False)
    return plain, default


def test_default_schedules_are_bit_identical_to_tvm_lowering(zoo, zoo_builds):
    model, inputs = zoo
    plain, default = zoo_builds
    x = [i.numpy() for i in inputs]
    for got, want in zip(default.run(*x), plain.run(*x)):
        assert np.array_equal(got, want)  # same accumulation order per element
    with torch.no_grad():
        refs = model(*inputs)
    for got, ref in zip(default.run(*x), refs):
        ref = ref.numpy()
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_every_kernel_is_reported(zoo_builds):
    plain, default = zoo_builds
    total = default.metadata["tuning"]["host_kernels"]
    assert plain.metadata["tuning"]["default_scheduled"] == 0
    # Every kernel of this zoo has a spatial loop to run in parallel.
    assert default.metadata["tuning"]["default_scheduled"] == total > 5
    assert f"0/{total} host kernels tuned ({total} more with the default CPU schedule)" in \
        default.describe()
    assert "default CPU schedule" not in plain.describe()


def test_kernels_get_threads_and_vectors(zoo):
    model, inputs = zoo
    mod, target, _ = prepared_host_module(model, "llvm", example_inputs=inputs)
    mod, _, _, _ = host_kernels(mod, target, None)
    scripts = {}
    for gv, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            new = schedule_kernel(func, target)
            assert new is not None and bool(new.attrs[ATTR]), gv.name_hint
            scripts[gv.name_hint] = new.script()
    # The first conv (3->16, 32x48 output): the module's function order is a hash map's,
    # so pick it by name (the strided conv's 12-wide rows are not vectorized).
    conv = scripts["fused_conv2d_add_relu"]
    assert "T.parallel" in conv and "T.vectorized" in conv
    # The conv's output row sits below its reduction loops: the init is split off.
    assert "_init" in conv
    assert all("T.parallel" in s for s in scripts.values())


def test_gpu_and_tuned_kernels_are_left_alone(zoo):
    import tvm

    model, inputs = zoo
    mod, target, _ = prepared_host_module(model, "llvm", example_inputs=inputs)
    mod, _, _, _ = host_kernels(mod, target, None)
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_87"}, host="llvm")
    same, count = apply_default_schedules(mod, cuda)
    assert count == 0 and same is mod
    # A kernel a tuning record scheduled keeps that schedule.
    gv = next(gv for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc))
    marked = mod.functions[gv].with_attr("tirx.is_scheduled", True)
    mod[gv] = marked
    out, count = apply_default_schedules(mod, target)
    assert out[gv].same_as(marked)
    assert count == sum(1 for f in mod.functions.values()
                        if isinstance(f, tirx.PrimFunc)) - 1


def test_cli_opt_out(tmp_path):
    proc = run_cli("compile", "perception-cnn", "--target", "llvm", "--no-shipped-logs",
                   "--no-default-schedules", "-o", tmp_path / "m.so")
    assert proc.returncode == 0, proc.stderr
    assert "0/5 host kernels tuned" in proc.stdout  # every conv direct (no Winograd)
    assert "default CPU schedule" not in proc.stdout


def _conv_kernel(c, h, w, k, kernel, stride, pad):
    from tvm import te, topi

    data = te.placeholder((1, c, h, w), name="data")
    weight = te.placeholder((k, c, kernel, kernel), name="weight")
    bias = te.placeholder((1, k, 1, 1), name="bias")
    out = topi.nn.relu(topi.nn.conv2d_nchw(data, weight, stride, pad, 1) + bias)
    return te.create_prim_func([data, weight, bias, out])


def _outputs(funcs, target):
    """The output of each kernel in ``funcs`` (same signature) on the same random inputs."""
    import tvm

    rng = np.random.default_rng(0)
    args = [rng.standard_normal([int(d) for d in p.ty.shape]).astype("float32")
            for p in funcs[0].params]
    outs = []
    for f in funcs:
        lib = tvm.compile(tvm.IRModule({"main": f}), target=target)
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*tensors)
        outs.append(tensors[-1].numpy())
    return outs


@pytest.mark.parametrize("shape", [
    (16, 14, 14, 32, 3, 1, 1),   # a 14-wide row: 14 lanes (or 7), no masked tail
    (32, 7, 7, 24, 3, 1, 1),     # ResNet-18's last stage: 7-column rows
    (8, 32, 64, 16, 3, 2, 1),    # strided: the padded input stored and written by phase
    (8, 31, 63, 16, 3, 2, 1),    # strided, an odd padded row: its phases differ in length
    (24, 16, 16, 40, 1, 1, 0),   # pointwise
    (3, 20, 36, 12, 7, 2, 3),    # a stem: 7x7, 3 input channels
])
def test_register_blocked_convolutions_are_bit_identical(shape):
    """Convolutions get the register-blocked schedule (a tile of output channels x one
    vector of columns accumulated in registers) and still match TVM's lowering bit for
    bit (each output keeps its accumulation order)."""
    import tvm

    func = _conv_kernel(*shape).with_attr("global_symbol", "main")
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # AVX2
    new = schedule_kernel(func, target)
    script = new.script()
    assert 'scope="local"' in script and "T.unroll" in script and "T.vectorized" in script
    assert "T.parallel" in script
    outs = _outputs([func, new], target)
    assert np.abs(outs[0]).max() > 0
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.parametrize("stride", [1, 2])
def test_chunked_reduction_variants_sweep_the_row_per_chunk(stride):
    """Tuning candidates: the default tile with the input channels in chunks of 8 and 16,
    every tile of the row swept per chunk (the row's accumulators in a local buffer), still
    bit-identical to TVM's lowering; a conv with no more input channels than a chunk gets
    no such variant."""
    import tvm

    from tvm_cruise.schedules.cpu import blocked_variants

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # AVX2
    func = _conv_kernel(32, 8 * stride, 32 * stride, 16, 3, stride, 1).with_attr(
        "global_symbol", "main")
    variants = dict(blocked_variants(func, target))
    for size in (8, 16):
        script = variants[f"default tile, reduction in chunks of {size}"].mod.script()
        # chunk loop, then the row's tiles (4 of 4 channels x 1 vector x 2 output rows),
        # then the chunk's channels
        assert f"for rc_0, xx_0, rc_1, ry, rx in T.grid({32 // size}, 4, {size}, 3, 3)" \
            in script, script
    outs = _outputs([func, variants["default tile, reduction in chunks of 8"].mod["main"]],
                    target)
    assert np.abs(outs[0]).max() > 0 and np.array_equal(outs[0], outs[1])
    few = _conv_kernel(8, 8, 32, 16, 3, 1, 1).with_attr("global_symbol", "main")
    assert not any("chunks" in label for label, _ in blocked_variants(few, target))


@pytest.mark.parametrize("shape, rows_outer", [
    # 16 -> 16, 3x3/2 on 32x32: the padded input (74 KB) read again by each of 4 channel
    # groups costs more than the weight (9 KB) read again for each of 16 output rows
    ((16, 32, 32, 16, 3, 2, 1), True),
    # 128 -> 128 on 6x16: the weight (590 KB) for each of 6 rows would cost more than the
    # input (74 KB) for each of 32 channel groups
    ((128, 6, 16, 128, 3, 1, 1), False),
])
def test_loop_order_follows_the_bytes_read_again(shape, rows_outer):
    """The default tile's outer loops: output rows outside the groups of output channels
    where that reads fewer bytes again (schedules.cpu._rows_outer_pays), else the other way
    round; the tuning job gets the other order as a variant. Both stay bit-identical to
    TVM's lowering."""
    import tvm

    from tvm_cruise.schedules.cpu import blocked_variants

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # AVX2
    func = _conv_kernel(*shape).with_attr("global_symbol", "main")
    fused = {True: "nn_yy_0_ff_0_fused", False: "nn_ff_0_yy_0_fused"}  # rows in pairs
    script = schedule_kernel(func, target).script()
    assert f"for {fused[rows_outer]} in T.parallel" in script, script
    other = ("default tile, channel groups outside the rows" if rows_outer else
             "default tile, rows outside the channel groups")
    variants = dict(blocked_variants(func, target))
    assert f"for {fused[not rows_outer]} in T.parallel" in variants[other].mod.script()
    assert f"{other}, reduction in chunks of 8" in variants
    outs = _outputs([func, schedule_kernel(func, target), variants[other].mod["main"]], target)
    assert np.abs(outs[0]).max() > 0
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_two_row_tiles_only_where_the_rows_share_an_operand():
    """A register tile over two output rows saves loads only where an operand does not
    move with those rows (a conv's weight, broadcast to both); a batched matmul's batch
    loop shares neither operand, so no variant tiles over it, while a conv's do."""
    import tvm
    from tvm import te, topi

    from tvm_cruise.schedules.cpu import blocked_variants

    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # AVX2
    a = te.placeholder((4, 32, 64), name="a")
    b = te.placeholder((4, 64, 32), name="b")
    bmm = te.create_prim_func([a, b, topi.nn.batch_matmul(a, b, transpose_b=False)])
    labels = [label for label, _ in blocked_variants(bmm.with_attr("global_symbol", "main"),
                                                     target)]
    assert labels and not any("output rows" in label for label in labels)
    assert "yy_1 in T.unroll" not in schedule_kernel(bmm.with_attr("global_symbol", "main"),
                                                     target).script()
    conv = _conv_kernel(16, 8, 16, 16, 3, 1, 1).with_attr("global_symbol", "main")
    assert "for yy_1 in T.unroll(2)" in schedule_kernel(conv, target).script()
    assert any("x 2 output rows" in label for label, _ in blocked_variants(conv, target))


def _conv_relu_avx2(shape, weight, bias, stride=1, padding=1, fast_math=True):
    """``(module, its host kernels, target)``: relu(conv2d(x, weight) + bias) as a Relax
    module, its kernels lowered for an 8-lane (AVX2) CPU."""
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(weight), strides=stride,
                                           padding=padding))
            y = bb.emit(relax.op.add(y, relax.const(bias)))
            out = bb.emit_output(relax.op.nn.relu(y))
        bb.emit_func_output(out)
    mod = bb.get()
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # 8 lanes
    with target:
        kernels, _, _, _ = host_kernels(mod, target, fast_math=fast_math)
    return mod, kernels, target


@pytest.mark.parametrize("size, stride, plan", [
    (3, 1, (3, "ff", 1)),    # 3 columns of 8 AVX2 lanes: the whole row x 8 output channels
    (3, 2, (3, "ff", 1)),    # the same, strided
    (14, 1, (7, "ff", 1)),   # 14 columns (ResNet-18's third stage on AVX-512: 14 of 16
                             # lanes): tiles of 7 columns x 8 output channels
    (8, 1, (4, "xx", 1)),    # one whole row vector: OIHW weight, 4 output channels x 2
                             # output rows x 8 columns (AVX2 default)
    (16, 1, (4, "xx", 1)),   # two row vectors: the same tile
    (16, 2, (8, "ff", 1)),   # the same rows, strided (AVX2): over packed output channels,
                             # 8 columns x 8 channels, no phase-split input
])
def test_narrow_rows_are_vectorized_over_packed_channels(size, stride, plan, monkeypatch):
    """A convolution whose rows do not split into whole vectors, or (on AVX2) that strides
    along them, reads its weight packed channel-innermost at build time (schedules.layout)
    and is vectorized over output channels, a tile of columns accumulated in registers;
    other rows of whole vectors keep row vectors and the OIHW weight (on AVX2, 4 channels
    x 1 vector x 2 output rows). Results stay bit-identical to TVM's lowering of the
    original convolution."""
    import re

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((32, 16, 3, 3)).astype("float32")
    bias = rng.standard_normal((1, 32, 1, 1)).astype("float32")
    mod, kernels, target = _conv_relu_avx2((1, 16, size * stride, size * stride), weight,
                                           bias, stride=stride, padding=1)
    (conv,) = [f for f in kernels.functions.values() if isinstance(f, tirx.PrimFunc)]
    packed = plan[1] == "ff"
    assert [int(d) for d in conv.params[1].ty.shape] == \
        ([4, 16, 3, 3, 8] if packed else [32, 16, 3, 3])  # [O/8][I][kh][kw][8] or OIHW
    new = schedule_kernel(conv, target)
    script = new.script()
    # the register tile: `unrolled` x `vectors` accumulators, each a vector along `vectorized`
    unrolled, vectorized, vectors = plan
    update = script[script.index("for rc, ry, rx"):]
    pair = r"for yy_1 in T.unroll\(T.int64\(2\)\):\s+" if not packed else ""  # 2 rows
    inner = f"{vectorized}_{vectors}"
    assert re.search(rf"for \w+ in T.unroll\(T.int64\({unrolled}\)\):\s+{pair}for {inner} "
                     r"in T.vectorized\(T.int64\(8\)\)", update), script
    if stride > 1:  # the padded input: split by phase for row vectors only
        pad = re.search(r"pad_temp = T.sblock_alloc_buffer\(\((.*?)\)\)", script).group(1)
        assert pad.count("T.int64") == (4 if packed else 5), script
    data = rng.standard_normal((1, 16, size * stride, size * stride)).astype("float32")
    got = tvm_cruise.build(mod, "llvm", tuning_logs=False).run(data)
    from tvm_cruise.schedules import layout

    monkeypatch.setattr(layout, "pack_conv_weights", lambda m, _target: m)
    want = tvm_cruise.build(mod, "llvm", tuning_logs=False, default_schedules=False).run(data)
    assert np.array_equal(got, want)  # TVM's lowering of the unpacked convolution
    ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(data), torch.from_numpy(weight),
                                                torch.from_numpy(bias.ravel()), stride, 1))
    assert np.abs(got - ref.numpy()).max() <= 1e-5 * np.abs(ref.numpy()).max()


@pytest.mark.parametrize("shape, n, block", [
    ((64, 32), 48, 16),      # two vectors divide the row: [N/16][K][16]
    ((1, 24, 32), 40, 8),    # one vector does (3-D input, a transformer's tokens)
    ((64, 32), 36, None),    # the row is not whole vectors: weight left as it is
    ((4, 32), 48, None),     # fewer rows than a register tile: nothing to reuse
])
def test_dense_weights_are_packed_in_column_blocks(shape, n, block, monkeypatch):
    """A matmul by a constant [K][N] weight with at least a tile of rows reads that weight
    packed [N / block][K][block] on AVX2 (schedules.layout), its tile a contiguous stream,
    and is register-blocked over rows; results stay bit-identical to TVM's lowering of the
    unpacked matmul and match numpy."""
    import tvm
    from tvm import relax

    from tvm_cruise.schedules import layout

    rng = np.random.default_rng(1)
    k = shape[-1]
    weight = rng.standard_normal((k, n)).astype("float32")
    bias = rng.standard_normal(n).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(weight)))
            out = bb.emit_output(relax.op.add(y, relax.const(bias)))
        bb.emit_func_output(out)
    mod = bb.get()
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2, "mcpu": "haswell"})  # 8 lanes
    with target:
        kernels, _, _, _ = host_kernels(mod, target)
    (mm,) = [f for f in kernels.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert [int(d) for d in mm.params[1].ty.shape] == \
        ([n // block, k, block] if block else [k, n])
    if block:  # a register tile of rows x vectors of one packed block
        script = schedule_kernel(mm, target).script()
        update = script[script.index("for k in range"):]
        assert "T.unroll" in update and "T.vectorized(T.int64(8))" in update, script
    avx512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    with avx512:  # not measured there: left as it was
        kernels, _, _, _ = host_kernels(mod, avx512)
    (mm,) = [f for f in kernels.functions.values() if isinstance(f, tirx.PrimFunc)]
    assert [int(d) for d in mm.params[1].ty.shape] == [k, n]
    data = rng.standard_normal(shape).astype("float32")
    got = tvm_cruise.build(mod, "llvm", tuning_logs=False).run(data)
    monkeypatch.setattr(layout, "pack_matmul_weights", lambda m, _target: m)
    want = tvm_cruise.build(mod, "llvm", tuning_logs=False, default_schedules=False).run(data)
    assert np.array_equal(got, want)  # TVM's lowering of the unpacked matmul
    ref = data @ weight + bias
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("channels, size, padding, batch, fast_math, variant", [
    (64, 16, 1, 1, True, 2),      # 64 tiles of 2x2 (16 of 4x4: too few for F(4x4))
    (64, 15, 1, 2, True, 2),      # an odd output: the last tiles cropped; a batch of 2
    (80, 18, 0, 1, True, 2),      # no padding (16x16 output); channels not a multiple of 16
    (32, 16, 1, 1, True, None),   # too few tiles for F(4x4), too few channels for F(2x2)
    (32, 24, 1, 1, True, 4),      # 32 channels pay with F(4x4)
    (32, 24, 1, 1, False, None),  # ... not with F(2x2)
    (64, 8, 1, 1, True, None),    # too few tiles (16)
    (64, 14, 1, 1, True, 2),      # 49 tiles of 256 KB products: reduction swept in chunks
    (512, 16, 1, 1, True, None),  # 16 MB of transformed weight: a weight stream, left direct
    (64, 24, 1, 1, True, 4),      # 36 tiles of 4x4: F(4x4, 3x3) with fast math
    (64, 23, 1, 2, True, 4),      # F(4x4) with cropped last tiles, a batch of 2
    (32, 44, 1, 1, True, 4),      # rows of 11 tiles: no vector divides them, input scalar
    (64, 24, 1, 1, False, 2),     # exact math keeps F(2x2, 3x3)
])
def test_winograd_convolutions(channels, size, padding, batch, fast_math, variant):
    """A stride-1 3x3 convolution with enough channels and tiles runs as Winograd on AVX2
    (schedules.winograd): F(4x4, 3x3) where it pays with fast math (the default), else
    F(2x2, 3x3); three kernels, the epilogue fused into the output transform. F(2x2) is as
    accurate as the direct convolution against a float64 reference, F(4x4) within 16x its
    error (its transforms multiply by up to 8 and 1/24; measured 4-8x); others stay direct
    convolutions."""
    from tvm_cruise.schedules.winograd import CHUNKED_TILES, CHUNKED_WEIGHT_BYTES, searchable

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((channels, channels, 3, 3)).astype("float32")
    bias = rng.standard_normal((1, channels, 1, 1)).astype("float32")
    mod, kernels, target = _conv_relu_avx2((batch, channels, size, size), weight, bias,
                                           padding=padding, fast_math=fast_math)
    names = sorted(gv.name_hint for gv, f in kernels.functions.items()
                   if isinstance(f, tirx.PrimFunc))
    if variant:
        assert names == ["fused_winograd_output_add_relu", "winograd_gemm", "winograd_input"]
        points = variant + 2
        for gv, func in kernels.functions.items():  # each has a schedule of its own kind
            if isinstance(func, tirx.PrimFunc):
                assert int(func.params[0].ty.shape[0]) in (batch, points ** 2, points)
                script = schedule_kernel(func, target).script()
                if gv.name_hint == "winograd_gemm":  # few tiles, large products: chunks
                    tiles = (-(-(size + 2 * padding - 2) // variant)) ** 2  # per image
                    assert int(func.params[0].ty.shape[-1]) == tiles * 1
                    chunked = tiles < CHUNKED_TILES and \
                        channels * channels * 4 >= CHUNKED_WEIGHT_BYTES
                    assert ("rc_0" in script) == chunked, script
                if gv.name_hint == "winograd_input":
                    assert int(func.params[1].ty.shape[0]) == points
                    if variant == 4:  # over a vector of a row's tiles where one divides it
                        from tvm_cruise.schedules.cpu import _row_block

                        row = -(-(size + 2 * padding - 2) // 4)
                        assert ("T.vectorized" in script) == (_row_block(row, 8) is not None)
                # tuning jobs search all but F(4x4)'s transforms (own schedules only)
                assert searchable(func) == (variant == 2 or gv.name_hint == "winograd_gemm")
    else:
        assert not any("winograd" in n for n in names), names
    data = rng.standard_normal((batch, channels, size, size)).astype("float32")
    got = tvm_cruise.build(mod, "llvm", tuning_logs=False, fast_math=fast_math).run(data)
    ref = torch.relu(torch.nn.functional.conv2d(
        torch.from_numpy(data).double(), torch.from_numpy(weight).double(),
        torch.from_numpy(bias.ravel()).double(), 1, padding)).numpy()
    direct = torch.relu(torch.nn.functional.conv2d(
        torch.from_numpy(data), torch.from_numpy(weight), torch.from_numpy(bias.ravel()), 1,
        padding)).numpy()
    scale = np.abs(ref).max()
    # as accurate as a float32 direct convolution (PyTorch's), within a small factor
    factor = 16 if variant == 4 else 4
    assert np.abs(got - ref).max() <= max(factor * np.abs(direct - ref).max(), 1e-6 * scale)
    if variant:  # opting out of the default schedules keeps TVM's direct convolution
        plain = tvm_cruise.build(mod, "llvm", tuning_logs=False, default_schedules=False)
        assert plain.metadata["tuning"]["host_kernels"] == 1
        assert np.abs(plain.run(data) - ref).max() <= 1e-5 * scale


def test_winograd_kernels_of_a_torchvision_resnet_match_pytorch():
    """torchvision's ResNet-18 (nobody here wrote it) at 64x64: its first stage's 3x3
    convolutions (64 channels, 16x16) run as Winograd; the model's outputs match PyTorch."""
    from model_corpus import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # realistic statistics for the batch norms folded at build time
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    from tvm_cruise.schedules.cpu import vector_shape

    mod, target, _ = prepared_host_module(model, "llvm", example_inputs=(x,))
    if vector_shape(target)[0] != 8:
        pytest.skip("Winograd is used on 8-lane (AVX2) CPUs only")
    names = [gv.name_hint for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)]
    assert sum(n.startswith("winograd_gemm") for n in names) >= 1, names
    art = tvm_cruise.build(model, "llvm", example_inputs=(x,), tuning_logs=False)
    with torch.no_grad():
        want = model(x).numpy()
    got = art.run(x.numpy())
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
