"""Shared fixtures: tiny configs of every supported family, built in code (random weights)."""

import contextlib
import os
import signal
import subprocess
from collections import Counter, defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import HubertConfig, Wav2Vec2Config, WavLMConfig  # noqa: E402

import hf_hjprune  # noqa: E402, F401  (registers the pruned models)
from hf_hjprune.structure import unit_counts  # noqa: E402

FAMILY_CONFIGS = {"wav2vec2": Wav2Vec2Config, "hubert": HubertConfig, "wavlm": WavLMConfig}


def tiny_config(family: str = "wav2vec2", norm: str = "group", stable: bool = False, **overrides):
    """A wav2vec2-shaped config small enough for a CPU test (random weights, no dropout)."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 12, 12),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        conv_bias=norm == "layer",
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm=norm,
        do_stable_layer_norm=stable,
        vocab_size=12,
        num_labels=5,
        classifier_proj_size=16,
        hidden_dropout=0.0,
        activation_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    if family == "wavlm":
        values.update(num_buckets=16, max_bucket_distance=40)
    values.update(overrides)
    return FAMILY_CONFIGS[family](**values)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One synthetic corpus cache per test module (built once, then reused)."""
    return tmp_path_factory.mktemp("corpus_cache")


def quick_overrides(sizes: dict, cache_dir, output_dir, *overrides) -> list[str]:
    """Recipe overrides that make a shipped tiny recipe run in a few seconds on a synthetic corpus of `sizes`."""
    return [
        *(f"data_options.{key}={value}" for key, value in sizes.items()),
        f"data_options.cache_dir={cache_dir}",
        "max_steps=4",
        "batch_size=4",
        "eval_steps=2",
        "log_steps=1",
        f"output_dir={output_dir}",
        *overrides,
    ]


def random_keep(config, generator: torch.Generator, allow_empty: bool = True) -> dict:
    """Random kept units per layer; with `allow_empty`, the first layer keeps no heads and the last no FFN units."""

    def subset(size: int, low: int) -> list[int]:
        count = int(torch.randint(low, size + 1, (1,), generator=generator))
        return sorted(torch.randperm(size, generator=generator)[:count].tolist())

    counts = unit_counts(config)
    keep = {group: [subset(n, 1) for n in sizes] for group, sizes in counts.items()}
    if allow_empty:
        keep["heads"][0], keep["ffn"][-1] = [], []
    return keep


def padded_audio(batch_size: int = 2, samples: int = 3200, last_length: int = 2400, seed: int = 0):
    """Random audio whose last item is padded (zeros, mask 0) after `last_length` samples."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch_size, samples, generator=generator)
    attention_mask = torch.ones(batch_size, samples, dtype=torch.long)
    attention_mask[-1, last_length:] = 0
    values[-1, last_length:] = 0.0
    return values, attention_mask


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (results that depend on the reduction order), then the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _thread_count_restored():
    """Fail a test that leaves torch's thread count changed: every later test would run on it."""
    threads = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(threads)
    assert after == threads, f"the test changed torch's thread count from {threads} to {after} and left it so"


@pytest.fixture
def audio_batch():
    return padded_audio()


# Marks that transformers' common tests carry (tests/test_conformance.py runs them).
TRANSFORMERS_TEST_MARKS = (
    "slow",
    "accelerate_tests",
    "flash_attn_test",
    "flash_attn_3_test",
    "flash_attn_4_test",
    "torch_compile_test",
)


def pytest_configure(config):
    for mark in TRANSFORMERS_TEST_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' common tests")


def pytest_terminal_summary(terminalreporter):
    """Counts of the conformance tests per pruned family, so that CI logs show them."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            path, _, rest = getattr(report, "nodeid", "").partition("::")
            if not path.endswith("test_conformance.py"):
                continue
            if not rest:  # the whole module skipped: the sdist could not be fetched
                reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
                terminalreporter.write_line(f"conformance with transformers: SKIPPED ({reason})", yellow=True)
                return
            if report.when != "call" and outcome == "passed":
                continue
            family = rest.split("::")[0].removeprefix("HJPruned").removesuffix("ConformanceTest").lower()
            expected = outcome == "skipped" and "expected difference" in str(report.longrepr)
            counts[family]["expected differences skipped" if expected else outcome] += 1
    if counts:
        import transformers

        terminalreporter.write_sep(
            "=", f"conformance with transformers {transformers.__version__} common tests"
        )
        for family, count in counts.items():
            terminalreporter.write_line(
                f"{family}: " + ", ".join(f"{n} {what}" for what, n in sorted(count.items()))
            )


def finish(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """Wait for a process started in its own session; on timeout kill it and all its descendants
    rather than leave orphans behind (torchrun starts each worker in a session of its own, and a
    surviving worker keeps the output pipes open), then fail with what it printed."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        descendants = psutil.Process(process.pid).children(recursive=True)
        os.killpg(process.pid, signal.SIGKILL)
        for descendant in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendant.kill()
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(
            f"{process.args} did not finish in {timeout:.0f} s; it printed:\n{stdout[-2000:]}\n{stderr[-4000:]}"
        )


def run_in_session(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`subprocess.run` in a new session, with `finish`'s clean-up on timeout."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    stdout, stderr = finish(process, timeout)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
