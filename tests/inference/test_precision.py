"""resolve_precision: each capability faked (CPU flags, oneDNN, the timing probe) and the choice checked."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from stcn.errors import UserError
from stcn.inference import precision as P

CPU = torch.device("cpu")


@pytest.fixture
def fake(monkeypatch):
    """fake(flags=..., mkldnn=..., probe=...): flags None means /proc/cpuinfo is unreadable."""
    probes = []

    def apply(*, flags, mkldnn: bool, probe: bool = False):
        monkeypatch.setattr(P, "cpu_flags", lambda *a, **k: None if flags is None else frozenset(flags))
        monkeypatch.setattr(P, "mkldnn_bf16_supported", lambda: mkldnn)

        def fake_probe(*a, **k):
            probes.append(1)
            return probe

        monkeypatch.setattr(P, "bf16_probe", fake_probe)
        monkeypatch.setattr(P, "_warned_slow_bf16", False)
        return probes

    return apply


AVX2 = {"sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}


@pytest.mark.parametrize("flags, mkldnn, expected", [
    (AVX2, False, "fp32"),                              # AVX2 only: oneDNN would emulate
    (AVX512, True, "fp32"),                             # AVX-512 without BF16: oneDNN says yes but emulates
    (AVX512 | {"avx512_bf16"}, True, "bf16"),           # Zen 4 / Cooper Lake
    (AVX512 | {"amx_bf16", "amx_tile"}, True, "bf16"),  # Sapphire Rapids
    (AVX512 | {"avx512_bf16"}, False, "fp32"),          # a torch build whose oneDNN will not use it
    ({"fp", "asimd", "bf16"}, True, "bf16"),            # aarch64 with BF16
    ({"fp", "asimd"}, True, "fp32"),
])
def test_auto_on_cpu_follows_the_capability(fake, flags, mkldnn, expected):
    probes = fake(flags=flags, mkldnn=mkldnn, probe=True)
    assert P.resolve_precision("auto", CPU) == expected
    assert not probes  # flags known: no timing probe


@pytest.mark.parametrize("probe", [True, False])
def test_auto_times_a_probe_when_flags_are_unknown(fake, probe):
    probes = fake(flags=None, mkldnn=True, probe=probe)
    assert P.resolve_precision("auto", CPU) == ("bf16" if probe else "fp32")
    assert probes == [1]


def test_no_probe_when_onednn_has_no_bf16(fake):
    probes = fake(flags=None, mkldnn=False, probe=True)
    assert P.resolve_precision("auto", CPU) == "fp32"
    assert not probes


@pytest.mark.parametrize("flags", [AVX2, AVX512, {"fp", "asimd"}])
def test_auto_never_picks_bf16_without_native_support(fake, flags):
    for mkldnn in (True, False):
        fake(flags=flags, mkldnn=mkldnn, probe=False)
        assert P.resolve_precision("auto", CPU) != "bf16"


def test_explicit_bf16_without_native_support_warns_once(fake):
    fake(flags=AVX2, mkldnn=False)
    with pytest.warns(RuntimeWarning, match="slower"):
        assert P.resolve_precision("bf16", CPU) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", CPU) == "bf16"  # once per process


def test_explicit_bf16_with_native_support_is_silent(fake):
    fake(flags=AVX512 | {"avx512_bf16"}, mkldnn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.resolve_precision("bf16", CPU) == "bf16"


def test_fp32_is_always_fp32(fake):
    fake(flags=AVX512 | {"amx_bf16"}, mkldnn=True)
    assert P.resolve_precision("fp32", CPU) == "fp32"
    assert P.resolve_precision("fp32", torch.device("cuda")) == "fp32"


def test_fp16_on_cpu_is_a_user_error(fake):
    fake(flags=AVX512 | {"avx512_bf16"}, mkldnn=True)
    with pytest.raises(UserError, match="CUDA") as err:
        P.resolve_precision("fp16", CPU)
    assert "\n" not in str(err.value)


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="auto, fp32, bf16, fp16"):
        P.resolve_precision("int8", CPU)


def test_cuda_auto_is_fp16_without_a_gpu():
    # the choice depends on the device's type only: no GPU is needed to resolve it
    assert P.resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert P.resolve_precision("bf16", torch.device("cuda:0")) == "bf16"


def test_cpu_flags_reads_x86_and_arm_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n"
                   "flags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert P.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512_bf16"}
    assert P.cpu_flags(str(arm)) == {"fp", "asimd", "bf16"}
    assert P.cpu_flags(str(tmp_path / "missing")) is None


def test_this_host_agrees_with_its_flags():
    flags = P.cpu_flags() or frozenset()
    choice = P.resolve_precision("auto", CPU)
    if not flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        assert choice == "fp32"
    assert choice in ("fp32", "bf16")


@pytest.mark.cuda
def test_cuda_auto_runs_fp16_autocast():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = torch.device("cuda")
    assert P.resolve_precision("auto", device) == "fp16"
    conv = torch.nn.Conv2d(8, 8, 3).to(device)
    with torch.autocast("cuda", dtype=P.DTYPES["fp16"]):
        assert conv(torch.randn(1, 8, 16, 16, device=device)).dtype == torch.float16


def test_inference_core_takes_a_precision(fake):
    from stcn.inference import InferenceCore
    from stcn.model import PRESETS, STCN

    model = STCN(PRESETS["small"]).eval()
    fake(flags=AVX2, mkldnn=False)
    core = InferenceCore(model)  # auto by default, as every command
    assert core.precision == "fp32" and not core.amp
    with pytest.warns(RuntimeWarning, match="no native bfloat16"):  # amp: mixed precision whatever auto says
        assert InferenceCore(model, amp=True).precision == "bf16"
    fake(flags=AVX512 | {"avx512_bf16"}, mkldnn=True)
    core = InferenceCore(model)
    assert core.precision == "bf16" and core.amp
    assert InferenceCore(model, precision="fp32").precision == "fp32"  # exact: one keyword away
    assert InferenceCore(model, precision="fp32", amp=True).precision == "bf16"  # the original's amp=True
    with pytest.raises(UserError):
        InferenceCore(model, precision="fp16")


@pytest.mark.float_sensitive
@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")  # emulated where not native: expected
def test_bf16_on_trained_weights_agrees_with_exact():
    """Issue #14: bf16 judged on trained weights (random recipe weights make labels fragile). The demo
    model on a clip like the demo's and a held-out validation video: labels >= 99.5 % equal to exact
    fp32 and J&F within 0.3 (measured at 240x432, 40 frames: >= 99.997 % and within 0.01,
    benchmarks/RESULTS.md). Runs on any host: where bf16 is not native it is emulated, slower, but the
    same rounding of the same operands."""
    import numpy as np

    from stcn.data.synthetic import generate_video
    from stcn.eval.metrics import clip_jf
    from stcn.inference.options import EngineOptions
    from stcn.inference.video import segment_video
    from stcn.train.validate import synthetic_validation_videos
    from stcn.weights.io import load_model

    model = load_model("demo")
    videos = [generate_video(1234, num_frames=12, height=120, width=216, num_objects=3, allow_exit=True),
              *synthetic_validation_videos(1, first_seed=101, num_frames=12, height=120, width=216)]
    for video in videos:
        labels, scores, probs = {}, {}, {}
        for precision in ("fp32", "bf16"):
            results = list(segment_video(video.frames, {0: video.labels[0]}, model=model,
                                         options=EngineOptions(size=-1, precision=precision)))
            labels[precision] = np.stack([r.labels for r in results])
            probs[precision] = torch.stack([r.probs for r in results[1:]])
            j, f, _ = clip_jf(video.labels, labels[precision], list(video.object_ids))
            scores[precision] = 100 * (j + f) / 2
        assert (probs["fp32"] - probs["bf16"]).abs().max() > 1e-4  # bf16 did run: the values moved
        assert (labels["fp32"] == labels["bf16"]).mean() >= 0.995
        assert abs(scores["fp32"] - scores["bf16"]) <= 0.3, scores


@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")  # emulated where not native: expected
def test_bf16_runs_from_a_bf16_weight_copy_with_autocasts_bits(monkeypatch):
    """bf16 mode keeps a copy of the conv / linear weights in bf16 (no per-frame weight casts); its outputs
    are bit for bit those of autocast over the float32 weights, and the caller's model is untouched."""
    from stcn.data.synthetic import generate_video
    from stcn.inference import InferenceCore
    from stcn.inference import frame_step as FS
    from stcn.weights.io import load_model

    model = load_model("demo")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = generate_video(3, num_frames=6, height=64, width=96, num_objects=2)

    def run() -> list[torch.Tensor]:
        core = InferenceCore(model, size=-1, precision="bf16")
        with torch.inference_mode():
            return [core.step(frame, video.labels[0] if t == 0 else None) for t, frame in enumerate(video.frames)]

    core = InferenceCore(model, size=-1, precision="bf16")
    convs = [m for m in core.frame_step.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    bns = [m for m in core.frame_step.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight.dtype == torch.float32 for m in bns)  # autocast leaves BatchNorm in float32
    copied = run()
    monkeypatch.setattr(FS, "lowered_network", lambda m, dtype: m)  # plain autocast over the float32 weights
    plain = run()
    assert all(torch.equal(a, b) for a, b in zip(copied, plain))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")  # emulated where not native: expected
def test_engines_of_one_model_share_its_bf16_copy_until_the_model_changes():
    """A two-direction run's passes (``spawn``, alive together) hold one bf16 copy, which is the one the
    memory planner counts; a weight changed in place makes a new one; the cache keeps no model alive."""
    import gc
    import weakref

    from stcn.inference import InferenceCore
    from stcn.model import PRESETS
    from stcn.model.network import STCN

    model = STCN(PRESETS["small"]).eval()
    core = InferenceCore(model, size=-1, precision="bf16")
    old = core.frame_step.net
    assert old is not model and core.spawn().frame_step.net is old
    assert InferenceCore(model, size=-1, precision="fp32").frame_step.net is model
    with torch.no_grad():
        model.key_encoder.conv1.weight.mul_(2.0)
    new = InferenceCore(model, size=-1, precision="bf16").frame_step.net
    assert new is not old
    assert torch.equal(new.key_encoder.conv1.weight, model.key_encoder.conv1.weight.to(torch.bfloat16))
    ref = weakref.ref(model)
    del model, core, old, new
    gc.collect()
    assert ref() is None


def test_summaries_say_which_precision_ran(tmp_path, capsys):
    """`auto` is resolved per device; `stcn segment`'s and `stcn eval`'s summaries name the mode that ran
    beside the one asked for."""
    from stcn.cli import main
    from stcn.data.synthetic import generate_video, write_frames
    from stcn.eval.runners import RunSummary, format_summary
    from stcn.inference import EngineOptions
    from stcn.io.masks import save_label_png

    ran = P.resolve_precision("auto", torch.device("cpu"))
    assert EngineOptions(precision="auto").describe(ran).startswith(f"precision auto (ran {ran}), top_k 20, ")
    assert EngineOptions(precision="fp32").describe("fp32").startswith("precision fp32, top_k 20, ")

    video = generate_video(5, num_frames=4, height=48, width=64, num_objects=2)
    write_frames(tmp_path / "frames", video)
    save_label_png(tmp_path / "mask.png", video.labels[0])
    argv = ["segment", str(tmp_path / "frames"), "--mask", str(tmp_path / "mask.png"), "--out",
            str(tmp_path / "out"), "--weights", "demo", "--size", "-1", "--device", "cpu", "--precision", "auto"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert main(argv) == 0
    engine = [line for line in capsys.readouterr().out.splitlines() if line.startswith("engine: ")]
    assert engine == [f"engine: {EngineOptions(size=-1).describe(ran)}"]

    summary = RunSummary(out_dir=tmp_path, computed=["a"], frames=4, seconds=2.0,
                         options=EngineOptions(size=-1), precision=ran)
    last = format_summary(summary, "DAVIS 2017 val").splitlines()[-1]
    assert last == f"engine: {EngineOptions(size=-1).describe(ran)}"


@pytest.mark.parametrize("argv", [
    ["segment", "clip.mp4", "--mask", "m.png", "--out", "o"],
    ["eval", "davis", "--root", "r", "--out", "o"],
    ["eval", "youtube", "--root", "r", "--out", "o"],
    ["eval", "generic", "--root", "r", "--out", "o"],
    ["eval", "interactive", "--root", "r", "--out", "o"],
    ["demo"],
    ["ui", "clip.mp4"],
])
def test_every_command_defaults_to_auto(argv):
    """The issue's contract: ``--precision`` on segment, eval (every set), demo and ui, default auto, as
    the Python API's EngineOptions; exact fp32 is the one flag away."""
    from stcn.cli import build_parser
    from stcn.inference import EngineOptions

    parser = build_parser()
    assert parser.parse_args(argv).precision == "auto" == EngineOptions().precision
    assert parser.parse_args([*argv, "--precision", "fp32"]).precision == "fp32"


def test_the_python_api_defaults_to_auto_as_the_commands():
    """The engines behind the commands take the commands' default too (stcn segment: InferenceCore via
    EngineOptions; stcn ui: InteractiveSession; stcn eval interactive: DAVISProcessor)."""
    import inspect

    from stcn.inference import InferenceCore
    from stcn.interactive import InteractivePropagation
    from stcn.interactive.api import InteractiveSession
    from stcn.interactive.davis_driver import DAVISProcessor

    for engine in (InferenceCore, InteractivePropagation, InteractiveSession, DAVISProcessor):
        assert inspect.signature(engine).parameters["precision"].default == "auto", engine.__name__


@pytest.mark.skipif(os.environ.get("STCN_TEST_AUTO_BF16", "") in ("", "0"), reason="only in the auto-bf16 pass")
def test_the_auto_bf16_pass_reaches_this_process_and_its_children():
    """.ci/run's STCN_TEST_AUTO_BF16=1 pass tests something only if auto really is bf16, here and in the
    Python processes the tests start (the CLI forks, torchrun workers); the flags keep the real ones."""
    import subprocess
    import sys

    assert P.resolve_precision("auto", CPU) == "bf16"
    assert "avx512_bf16" in P.cpu_flags() and (P.cpu_flags() - {"avx512_bf16"})
    child = subprocess.run([sys.executable, "-c", "import torch; from stcn.inference.precision import "
                            "resolve_precision as r; print(r('auto', torch.device('cpu')))"],
                           capture_output=True, text=True, timeout=300, check=True)
    assert child.stdout.strip() == "bf16", child.stderr
