"""Write the Space's bundled example utterances: synthetic spoken commands (eSpeak NG), 16 kHz WAV.

    python spaces/hjprune-demo/make_examples.py

The sentences follow the templates of the synthetic corpus (`hf_hjprune.data.corpus`) that the demo models
are trained on; the file name is the sentence, which the app shows as the example's label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from hf_hjprune.data import SAMPLE_RATE, SynthesisRequest, synthesize_batch

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"

REQUESTS = (
    SynthesisRequest("set an alarm for seven thirty", voice="en-us+m3"),
    SynthesisRequest("turn off the lights in the kitchen", voice="en-gb+f2", seed=1),
    SynthesisRequest("what's the weather in paris tomorrow", voice="en-us+f4"),
    SynthesisRequest("play some jazz", voice="en-gb-scotland+m5", rate=150),
    SynthesisRequest("turn the volume down", voice="en-029+m1"),
)


def file_name(text: str) -> str:
    """`what's the weather` -> `whats_the_weather.wav`."""
    return "_".join("".join(c for c in word if c.isalnum()) for word in text.split()) + ".wav"


def main() -> None:
    EXAMPLES_DIR.mkdir(exist_ok=True)
    for request, audio in zip(REQUESTS, synthesize_batch(REQUESTS)):
        path = EXAMPLES_DIR / file_name(request.text)
        pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
        sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
        print(f"{path.name}: {len(audio) / SAMPLE_RATE:.2f} s ({request.voice})")


if __name__ == "__main__":
    main()
