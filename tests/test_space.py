"""The Gradio Space `spaces/hjprune-demo`: model pairs, the handler on good and bad input, the served
app driven by `gradio_client` (also 10 requests at once), and a headless Chromium screenshot."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from conftest import tiny_config  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForAudioClassification,
    AutoModelForCTC,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Processor,
)

from hf_hjprune import prune_model  # noqa: E402
from hf_hjprune.data import load_audio, synthesize  # noqa: E402

# Gradio's queue uses a pandas option that pandas 3 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / "hjprune-demo"
VOCAB = ["<pad>", "<unk>", "|", *"aeilmnorst"]  # 13 tokens
INTENTS = {0: "alarm_set", 1: "play_music", 2: "weather_query"}
# wav2vec2's total conv stride (320), so that 30 s of audio stay cheap: 1,500 frames
CONV = {"conv_kernel": (10, 8, 8), "conv_stride": (5, 8, 8)}
KEEP = {
    "conv": [list(range(0, 16, 2)), list(range(6)), list(range(12))],
    "heads": [[0, 1], [], [1, 2, 3]],
    "ffn": [list(range(24)), list(range(12)), list(range(48))],
}


def import_path(name: str, path: Path):
    """Import a module from a file that is not in a package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def space():
    return import_path("hjprune_space_app", SPACE_DIR / "app.py")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the app itself would use with 2 requests on 2 cores: stable timings."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_run(run_dir: Path, model, task: str, variant: str, tokenizer=None) -> None:
    """A run folder as `hjprune demo` leaves it: `model/` (model + processor) and `summary.json`."""
    feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    model.save_pretrained(run_dir / "model")
    if tokenizer is not None:
        Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(
            run_dir / "model"
        )
    else:
        feature_extractor.save_pretrained(run_dir / "model")
    summary = {"recipe": {"task": task}, "variant": variant}
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """Tiny dense and pruned ASR and SLU models (random weights) in the layout of `hjprune demo`."""
    root = tmp_path_factory.mktemp("demo")
    vocab_file = root / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        pad_token="<pad>",
        unk_token="<unk>",
        word_delimiter_token="|",
        bos_token=None,
        eos_token=None,
    )
    torch.manual_seed(0)
    asr = Wav2Vec2ForCTC(tiny_config(vocab_size=len(VOCAB), pad_token_id=0, **CONV)).eval()
    slu = Wav2Vec2ForSequenceClassification(
        tiny_config(
            num_labels=len(INTENTS), id2label=INTENTS, label2id={v: k for k, v in INTENTS.items()}, **CONV
        )
    ).eval()
    save_run(root / "asr_dense", asr, "asr", "none", tokenizer)
    save_run(root / "asr_hjmac", prune_model(asr, KEEP), "asr", "macs", tokenizer)
    save_run(root / "slu_dense", slu, "slu", "none")
    save_run(root / "slu_hjmac", prune_model(slu, KEEP), "slu", "macs")
    (root / "corpus").mkdir()  # not a run: ignored
    return root


@pytest.fixture(scope="module")
def entries(space, demo_dir):
    found, notes = space.discover_demo_entries(demo_dir)
    assert notes == []
    return found


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    return synthesize("set an alarm for seven thirty")


def expected_output(model_dir: Path, task: str, audio: np.ndarray) -> str:
    """What the model says, computed here independently of the app."""
    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
    inputs = torch.as_tensor(feature_extractor(audio, sampling_rate=16000).input_values[0])[None]
    auto = AutoModelForCTC if task == "asr" else AutoModelForAudioClassification
    with torch.no_grad():
        logits = auto.from_pretrained(model_dir).eval()(inputs).logits[0]
    if task == "asr":
        return Wav2Vec2CTCTokenizer.from_pretrained(model_dir).decode(logits.argmax(-1).tolist())
    return INTENTS[int(logits.argmax())]


# -- model pairs ------------------------------------------------------------------------------------


def test_demo_runs_are_paired_by_task(entries, demo_dir):
    assert [(e.name, e.task) for e in entries] == [
        ("demo ASR: asr_dense vs asr_hjmac", "asr"),
        ("demo SLU: slu_dense vs slu_hjmac", "slu"),
    ]
    assert entries[0].original == str(demo_dir / "asr_dense" / "model")
    assert entries[0].pruned == str(demo_dir / "asr_hjmac" / "model")


def test_entries_file(space, demo_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(space.hub_constants, "HF_HUB_OFFLINE", True)
    shutil.copytree(demo_dir / "asr_dense", tmp_path / "runs" / "dense")
    models = [
        {
            "name": "local pair",
            "task": "asr",
            "original": "runs/dense/model",
            "pruned": str(demo_dir / "asr_hjmac/model"),
        },
        {"name": "hub pair", "task": "asr", "original": "someone/dense", "pruned": "someone/pruned"},
        {"name": "typo", "task": "asr", "original": "runs/dense/modle", "pruned": "runs/dense/model"},
        {"name": "bad task", "task": "tts", "original": "a", "pruned": "b"},
        {"name": "local pair", "task": "slu", "original": "a", "pruned": "b"},
        ["not", "an", "object"],
    ]
    (tmp_path / "models.json").write_text(json.dumps(models), encoding="utf-8")
    found, notes = space.load_entries(tmp_path / "models.json", demo_dir)
    assert [e.name for e in found] == [
        "demo ASR: asr_dense vs asr_hjmac",
        "demo SLU: slu_dense vs slu_hjmac",
        "local pair",
        "typo",
    ]
    assert found[2].original == str(tmp_path / "runs" / "dense" / "model")  # relative to the JSON file
    assert found[3].original == str(tmp_path / "runs" / "dense" / "modle")  # no repo id: a missing folder
    text = "\n".join(notes)
    assert "`hub pair` hidden: offline" in text and "someone/dense" in text
    assert "entry 4 skipped (task 'tts' is not one of asr, slu)" in text
    assert "duplicate entry name `local pair`" in text
    assert "entry 6 skipped" in text

    monkeypatch.setenv("HJPRUNE_SPACE_MODELS", str(tmp_path / "missing.json"))
    found, notes = space.load_entries(demo_dir=tmp_path / "nothing")
    assert found == [] and "missing.json` cannot be read" in notes[0]


def test_shipped_models_file_and_front_matter(space, monkeypatch):
    """The Space card lists exactly the Hub repos of models.json; offline they are hidden, not broken."""
    models = json.loads((SPACE_DIR / "models.json").read_text(encoding="utf-8"))
    hub_ids = sorted({m[key] for m in models for key in ("original", "pruned")})
    card = (SPACE_DIR / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["sdk"] == "gradio" and front["sdk_version"] == gradio.__version__
    assert (SPACE_DIR / front["app_file"]).is_file()
    assert sorted(front["models"]) == hub_ids and front["license"] == "apache-2.0"

    monkeypatch.setattr(space.hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HJPRUNE_SPACE_MODELS", raising=False)
    found, notes = space.load_entries(demo_dir=SPACE_DIR / "no-demo-here")
    assert found == [] and len(notes) == len(models) and all("hidden: offline" in n for n in notes)


def test_requirements_cover_the_package(space):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((SPACE_DIR.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["space"]
    lines = (SPACE_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in lines}
    names = {req.split(">")[0].split("=")[0].split("<")[0].strip().lower() for req in wanted}
    assert names - {"gradio"} <= listed  # gradio comes from the card's sdk_version


def test_bundled_examples(space):
    make_examples = import_path("hjprune_space_make_examples", SPACE_DIR / "make_examples.py")
    files = space.example_files()
    assert [f.name for f in files] == sorted(make_examples.file_name(r.text) for r in make_examples.REQUESTS)
    for path in files:
        assert 0.5 < len(load_audio(path)) / 16000 < space.MAX_SECONDS


# -- the handler ------------------------------------------------------------------------------------


def test_compare_asr_and_slu(space, entries, utterance):
    for entry in entries:
        result = space.run_comparison(entry, (16000, utterance))
        for side, model_dir in ((result.original, entry.original), (result.pruned, entry.pruned)):
            expected = expected_output(Path(model_dir), entry.task, utterance)
            # An intent comes with its probability and the runners-up: "alarm_set 41% · play_music 33% · ..."
            predicted = side.prediction.split(" ")[0] if entry.task == "slu" else side.prediction
            assert predicted == expected
            assert side.latency_ms > 0 and side.params > 0 and side.macs_per_second > 0
            assert 0 < side.cnn_share < 1
        assert result.pruned.params < result.original.params
        assert (
            result.ideal_speedup > 1
            and result.measured_speedup > 0
            and 1 <= result.runs <= space.MAX_TIMED_RUNS
        )
        assert result.seconds == pytest.approx(len(utterance) / 16000)

        message, original, pruned, table, numbers = space.compare(entry.name, (16000, utterance), entries)
        assert message.startswith(f"Compared on {result.seconds:.2f} s of audio")
        assert original == result.original.prediction and pruned == result.pruned.prediction
        assert "measured speedup" in table and "ideal speedup" in table and "CNN share of MACs" in table
        assert numbers["pruned"]["params"] == result.pruned.params and numbers["ideal_speedup"] > 1


def test_describe(space, entries):
    text, figure = space.describe(entries[0].name, entries)
    assert "speech recognition" in text and entries[0].pruned in text
    assert [ax.get_title() for ax in figure.axes] == [
        "CNN: channels per conv layer: 65% kept",  # (8 + 6 + 12) / (16 + 12 + 12)
        "Attention heads per layer: 42% kept",  # 5 / 12
        "FFN units per layer: 58% kept",  # 84 / 144
    ]
    assert space.describe("nope", entries)[1] is None


def wav_file(path: Path, audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> str:
    sf.write(path, audio, rate, subtype=subtype)
    return str(path)


def text_file(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD_INPUTS = {
    "44.1 kHz stereo int16": (
        lambda u, d: (44100, (np.stack([u, u], 1) * 20000).astype(np.int16)),
        "resampled from 44.1 kHz, mixed down from 2 channels",
    ),
    "int32 mono": (lambda u, d: (16000, (u * 2**30).astype(np.int32)), "Compared on"),
    "float64 channels first": (
        lambda u, d: (16000, np.stack([u, u]).astype(np.float64)),
        "mixed down from 2 channels",
    ),
    "uint8": (lambda u, d: (16000, (u * 100 + 128).astype(np.uint8)), "Compared on"),
    "8 kHz stereo file": (
        lambda u, d: wav_file(d / "a.wav", np.stack([u[::2], u[::2]], 1), 8000),
        "resampled from 8 kHz, mixed down from 2 channels",
    ),
    "FLAC file": (lambda u, d: wav_file(d / "a.flac", u, 16000), "Compared on"),
    "40 s": (lambda u, d: (16000, np.tile(u, 40 * 16000 // len(u) + 1)), "only the first 30 s are used"),
}

BAD_INPUTS = {
    "nothing": (lambda d: None, "No audio yet"),
    "empty string": (lambda d: "", "No audio yet"),
    "silence": (lambda d: (16000, np.zeros(16000, np.int16)), "The audio is silent"),
    "too short": (lambda d: (16000, np.full(399, 5000, np.int16)), "too short"),
    "too short after resampling": (lambda d: (48000, np.full(1000, 5000, np.int16)), "too short"),
    "NaN": (lambda d: (16000, np.full(16000, np.nan, np.float32)), "NaN"),
    "3-D array": (lambda d: (16000, np.ones((2, 2, 4000), np.float32)), "1-D"),
    "empty array": (lambda d: (16000, np.zeros(0, np.int16)), "no samples"),
    "strings": (lambda d: (16000, np.array(["a", "b"])), "Unsupported sample type"),
    "ragged list": (lambda d: (16000, [[0.1, 0.2], [0.3]]), "not an array of samples"),
    "bad rate": (lambda d: ("fast", np.ones(16000, np.float32)), "Invalid sample rate"),
    "zero rate": (lambda d: (0, np.ones(16000, np.float32)), "Invalid sample rate"),
    "dict": (lambda d: {"path": "x"}, "Unsupported audio input"),
    "text renamed .wav": (lambda d: text_file(d / "notes.wav", "not audio"), "not audio"),
    "empty file": (lambda d: text_file(d / "empty.wav", ""), "no samples"),
    "silent file": (lambda d: wav_file(d / "s.wav", np.zeros(8000), 16000), "silent"),
    "NaN file": (lambda d: wav_file(d / "n.wav", np.full(8000, np.nan), 16000, "FLOAT"), "NaN"),
    "deleted file": (lambda d: str(d / "gone.wav"), "no longer available"),
}


@pytest.mark.parametrize("case", list(GOOD_INPUTS))
def test_unusual_input_is_converted(space, entries, utterance, tmp_path, case):
    make, note = GOOD_INPUTS[case]
    message, original, pruned, table, numbers = space.compare(
        entries[0].name, make(utterance, tmp_path), entries
    )
    assert note in message and original and pruned and numbers is not None


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_message(space, entries, tmp_path, case):
    make, phrase = BAD_INPUTS[case]
    message, original, pruned, table, numbers = space.compare(entries[0].name, make(tmp_path), entries)
    assert phrase in message
    assert (original, pruned, table, numbers) == ("", "", "", None)


def test_bad_entries_get_a_message(space, entries, demo_dir, utterance):
    audio = (16000, utterance)
    assert "Unknown model pair 'nope'" in space.compare("nope", audio, entries)[0]
    assert "Pick a model pair" in space.compare(None, audio, entries)[0]
    assert "make demo" in space.compare(None, audio, [])[0]
    missing = space.Entry("missing", "asr", str(demo_dir / "missing"), entries[0].pruned)
    assert "Cannot load the model" in space.compare("missing", audio, [missing])[0]
    wrong_task = space.Entry("wrong task", "asr", entries[1].original, entries[1].pruned)
    message = space.compare("wrong task", audio, [wrong_task])[0]
    assert "not a model for speech recognition" in message


def test_page_without_entries_says_how_to_make_one(space):
    demo = space.build_demo([])
    texts = [block.get("props", {}).get("value") for block in demo.config["components"]]
    assert space.NO_ENTRIES in texts


# -- the served app ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(space, entries):
    demo = space.build_demo(entries)
    demo.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=free_port(),
        quiet=True,
        **space.launch_options(),
    )
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False, analytics_enabled=False)


def test_client_compares(client, entries, tmp_path):
    example = str(SPACE_DIR / "examples" / "set_an_alarm_for_seven_thirty.wav")
    message, original, pruned, table, numbers = client.predict(
        entries[0].name, handle_file(example), api_name="/compare"
    )
    assert message.startswith("Compared on") and original and pruned and "measured speedup" in table
    assert (
        numbers["original"]["latency_ms"] > 0 and numbers["pruned"]["params"] < numbers["original"]["params"]
    )

    fake = tmp_path / "speech.wav"
    fake.write_text("this is not audio")
    message, *outputs = client.predict(entries[0].name, handle_file(str(fake)), api_name="/compare")
    assert "not audio" in message and outputs[:3] == ["", "", ""]

    text, plot = client.predict(entries[1].name, api_name="/describe")
    assert "intent classification" in text and plot is not None


def test_concurrent_requests(client, entries):
    example = str(SPACE_DIR / "examples" / "play_some_jazz.wav")
    names = [entries[i % 2].name for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        jobs = [
            pool.submit(client.predict, name, handle_file(example), api_name="/compare") for name in names
        ]
        results = [job.result(timeout=60) for job in jobs]
    for name, (message, original, pruned, _, numbers) in zip(names, results):
        assert message.startswith("Compared on") and original and pruned and numbers["entry"] == name


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1600",
        "--virtual-time-budget=10000",
        f"--user-data-dir={tmp}",
    ]
    return subprocess.run(
        [shutil.which("chromium"), *flags, *args], capture_output=True, text=True, timeout=90
    )


def test_page_in_headless_chromium(space, server, entries, tmp_path):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): no screenshot of the page")
    screenshot = tmp_path / "space.png"
    with ThreadPoolExecutor(2) as pool:
        shot = pool.submit(chromium, f"--screenshot={screenshot}", server, tmp=tmp_path / "profile-1")
        dom = pool.submit(chromium, "--dump-dom", server, tmp=tmp_path / "profile-2").result().stdout
        shot.result()
    assert space.TITLE in dom and space.SELECTOR_LABEL in dom and entries[0].name in dom
    assert 'src="data:image/png;base64,' in dom  # the structure chart
    image = np.asarray(Image.open(screenshot).convert("L"))
    assert image.shape == (1600, 1280)
    assert image.std() > 10 and len(np.unique(image)) > 50  # not a blank page
    if os.environ.get("HJPRUNE_SPACE_SCREENSHOT"):  # keep it, to look at
        shutil.copyfile(screenshot, os.environ["HJPRUNE_SPACE_SCREENSHOT"])
