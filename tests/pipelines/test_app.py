"""The web page of a bundle (`python -m pipelines.app`), driven in a real browser (Debian's chromium
through Playwright): an image page served by the command itself, a speech page served from this
process, bad input answered on the page, the pages' screenshots for the docs; and the upload of a
bundle with its card picture and its Space, offline through the recording stand-in of the Hub."""

import base64
import contextlib
import io
import os
import shutil
import socket
import subprocess
import tempfile
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

import pipelines
from pipelines import app as page_app
from pipelines.pictures import image_grid
from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.code_dataset import tokenizer_fingerprint
from stage1_tokenizer.data.fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist
from stage1_tokenizer.data.speech_corpus import SyntheticSpeech
from stage2_prior import TransformerConfig, TransformerPrior, VQGenerator, WaveNetConfig, WaveNetPrior

REPO = Path(__file__).resolve().parents[2]
# The docs' screenshots are rewritten only when asked (VQGEN_WRITE_SCREENSHOTS=1): a test run leaves the checkout as it was.
SCREENSHOTS = REPO / "docs" / "images" if os.environ.get("VQGEN_WRITE_SCREENSHOTS") == "1" else Path(tempfile.mkdtemp(prefix="vqgen-app-"))
SPEAKERS = ["us-male-low", "gb-female"]
RATE = 8000
FAKE_TOKEN = "hf_app_secret_token_456"
# The peak of a decoded <audio> in the browser: fetched from its src and decoded by Chromium itself.
AUDIO_IN_THE_BROWSER = """async (selector) => {
  const audio = document.querySelector(selector);
  const data = await (await fetch(audio.src)).arrayBuffer();
  const decoded = await new OfflineAudioContext(1, 1, 8000).decodeAudioData(data);
  const samples = decoded.getChannelData(0);
  let peak = 0;
  for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
  return {peak: peak, seconds: decoded.duration};
}"""
# Records every progress bar Gradio draws, however briefly it stays.
WATCH_PROGRESS = """() => {
  window.progressSeen = [];
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll('.progress-level, .progress-bar')) window.progressSeen.push(bar.textContent.trim());
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def require(module: str):
    """The dev extra installs the app's tools: a missing one fails with the fix, never skips."""
    try:
        return __import__(module)
    except ImportError:
        pytest.fail(f"{module} is missing: the app's test needs the dev extra; run `bash scripts/setup.sh` (pip install -e \".[dev]\").")


@contextlib.contextmanager
def one_thread():
    """Tiny models train several times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train(model, loss_of_a_batch, steps: int, learning_rate: float) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(steps):
        loss = loss_of_a_batch()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory) -> Path:
    """A Fashion-MNIST tokenizer and class-conditional prior (with condition dropout, so the page
    offers guidance) trained for a few seconds: the gallery shows garments, not noise."""
    torch.manual_seed(0)
    images, labels = (t[:2048] for t in load_fashion_mnist("train"))
    test_images, test_labels = (t[:256] for t in load_fashion_mnist("test"))
    with one_thread():
        tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=16, code_dim=8, codebook_size=32, quantizer="vq-ema"))
        train(tokenizer, lambda: tokenizer(images[torch.randint(0, len(images), (64,))]).loss, steps=300, learning_rate=3e-3)
        codes, test_codes = tokenizer.encode(images)[0], tokenizer.encode(test_images)[0]
        prior = TransformerPrior(TransformerConfig(codebook_size=32, code_shape=[7, 7], num_classes=10, hidden_size=32, num_layers=2,
                                                   num_heads=2, condition_dropout=0.1, id2label=dict(enumerate(FASHION_MNIST_LABELS)),
                                                   tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)))  # fmt: skip

        def prior_loss():
            pick = torch.randint(0, len(codes), (64,))
            return prior(codes[pick], condition=labels[pick]).loss

        train(prior, prior_loss, steps=300, learning_rate=3e-3)
        with torch.no_grad():
            mse = torch.nn.functional.mse_loss(tokenizer.decode(test_codes).clamp(0, 1), test_images).item()
            nll = prior(test_codes, condition=test_labels).loss.item()
    metrics = {"tokenizer": {"mse_from_codes": mse, "codebook_used": codes.unique().numel() / 32}, "priors": [{"nll_nats_per_code": nll}]}
    path = tmp_path_factory.mktemp("app") / "fashion-bundle"
    VQGenerator.from_parts(tokenizer, [prior], metrics=metrics, training_data="fashion_mnist").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def speech_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """A speech tokenizer with two espeak-ng voices trained for a few seconds (its decoder keeps
    the pauses of what it converts), an untrained WaveNet prior, and one utterance as a stereo
    file to upload. Returns (bundle, utterance)."""
    root = tmp_path_factory.mktemp("app-speech")
    torch.manual_seed(0)
    corpus = SyntheticSpeech("train", RATE, num_sentences=6, speakers=SPEAKERS, cache_dir=root / "cache")
    waves = [corpus[i]["input_values"][0] for i in range(len(corpus))]
    speaker_ids = torch.tensor([int(corpus[i]["speaker"]) for i in range(len(corpus))])
    with one_thread():
        tokenizer = VQVAEModel(VQVAEConfig(modality="audio", sampling_rate=RATE, hidden_channels=32, code_dim=16, codebook_size=32,
                                           quantizer="vq-ema", speakers=SPEAKERS))  # fmt: skip

        def segments_loss():
            pick = torch.randint(0, len(waves), (8,))
            starts = [int(torch.randint(0, len(waves[i]) - 2048, ())) for i in pick.tolist()]
            batch = torch.stack([waves[i][s : s + 2048] for i, s in zip(pick.tolist(), starts)])[:, None]
            return tokenizer(batch, speaker_ids[pick]).loss

        train(tokenizer, segments_loss, steps=300, learning_rate=2e-3)
    prior = WaveNetPrior(WaveNetConfig(codebook_size=32, code_shape=[64], num_classes=2, residual_channels=16, skip_channels=16,
                                       num_layers=4, id2label=dict(enumerate(SPEAKERS)),
                                       tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)))  # fmt: skip
    VQGenerator.from_parts(tokenizer, [prior], training_data="espeak-ng voices").save_pretrained(root / "bundle")
    utterance = waves[0].numpy()
    soundfile.write(root / "utterance.wav", np.stack([utterance, 0.5 * utterance], axis=1), RATE, subtype="PCM_16")
    return root / "bundle", root / "utterance.wav"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP port listens on, from the kernel's table (Linux)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture(scope="module")
def image_server(image_bundle):
    """`python -m pipelines.app --model DIR --port P`, as a user starts it, with a Hub token in its
    environment. Yields (URL, port, the lines it printed so far)."""
    port = free_port()
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipelines.app", "--model", str(image_bundle), "--port", str(port)]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed = []
    reader = threading.Thread(target=lambda: printed.extend(server.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not any("Running on local URL" in line for line in printed):
        assert server.poll() is None, "the app exited:\n" + "".join(printed)
        assert time.monotonic() < deadline, "the app did not start in 180 s:\n" + "".join(printed)
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}", port, printed
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def speech_server(speech_bundle):
    """The speech page built and served in this process (`build_app` + `launch`)."""
    require("gradio")
    port = free_port()
    page = page_app.build_app(speech_bundle[0])
    local_url, share_url = page_app.launch(page, port=port, block=False)
    assert share_url is None and local_url.startswith(f"http://127.0.0.1:{port}")
    yield local_url.rstrip("/")
    page.close()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed: `apt-get install chromium` (scripts/setup.sh does).")
    require("playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # the system's Chromium: Playwright's own browser download is not reachable from here
        chromium_browser = playwright.chromium.launch(executable_path=chromium)
        yield chromium_browser
        chromium_browser.close()


@pytest.fixture
def page(browser):
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    yield tab
    tab.close()


def test_image_page_generates_the_asked_images_and_answers_bad_input_on_the_page(image_server, image_bundle, page):
    url, port, printed = image_server
    page.goto(url)
    page.wait_for_selector("#generate")
    page.evaluate(WATCH_PROGRESS)
    class_box = page.locator("#class-name textarea")
    class_box.fill("Sneaker")
    page.locator("#num-images input[type=number]").fill("6")
    page.locator("#num-images input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("document.querySelectorAll('#gallery img').length == 6", timeout=60_000)
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(img => img.complete && img.naturalWidth > 0)")
    sizes = page.eval_on_selector_all("#gallery img", "images => images.map(img => [img.naturalWidth, img.naturalHeight])")
    assert sizes == [[28, 28]] * 6
    assert page.locator("#gallery").inner_text().count("sneaker") == 6  # each image captioned with its class
    assert any("sampl" in text for text in page.evaluate("window.progressSeen")), "no progress bar was drawn while sampling"
    # the pictures themselves: six different garments with ink on them, not blank squares
    sources = page.eval_on_selector_all("#gallery img", "images => images.map(img => img.src)")
    pictures = [np.asarray(Image.open(io.BytesIO(page.request.get(src).body()))) for src in sources]
    assert all(p.shape == (28, 28) and p.std() > 10 for p in pictures)
    assert len({p.tobytes() for p in pictures}) == 6
    # the model card's metrics, as the card rounds them
    metrics = VQGenerator.from_pretrained(image_bundle).config.metrics
    body = page.locator("#metrics").inner_text()
    assert "held-out NLL (nats per code)" in body and f"{metrics['priors'][0]['nll_nats_per_code']:.4g}" in body
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "app_image.png", full_page=True)

    # a misspelt class: the pipeline's close-match message on the page, and no stack trace
    class_box.fill("sneakr boot")
    page.locator("#generate").click()
    message = "unknown class name 'sneakr boot': the closest known labels: 'sneaker'"
    page.get_by_text(message).wait_for(timeout=30_000)
    class_box.fill("")
    page.locator("#generate").click()
    page.get_by_text("this bundle is class-conditional: pass a class name or id").wait_for(timeout=30_000)
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and 'File "' not in text

    # the command: on this machine only, and the token in its environment never printed
    assert any(f"http://127.0.0.1:{port}" in line for line in printed)
    assert listening_addresses(port) == {"127.0.0.1"}
    assert FAKE_TOKEN not in "".join(printed)


def test_speech_page_speaks_converts_and_refuses_bad_seconds(speech_server, speech_bundle, page):
    _, utterance = speech_bundle
    page.goto(speech_server)
    page.wait_for_selector("#speak")
    page.locator("#speaker input").click()
    page.get_by_role("option", name="gb-female").click()
    page.locator("#seconds input").fill("0.5")
    page.locator("#speak").click()
    page.wait_for_selector("#new-audio audio[src]", state="attached", timeout=60_000)
    new = page.evaluate(AUDIO_IN_THE_BROWSER, "#new-audio audio")
    assert new["peak"] > 0.02 and new["seconds"] == pytest.approx(0.504, abs=0.01)  # 0.5 s in whole codes of 64 samples
    page.wait_for_function("document.querySelector('#new-spectrogram img')?.naturalWidth > 0", timeout=30_000)
    assert page.locator("#new-spectrogram img").evaluate("img => img.naturalHeight") > 100
    page.wait_for_function("document.querySelector('#new-audio audio').duration > 0")  # the player shows its length
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "app_speech.png", full_page=True)

    # voice conversion of an uploaded stereo file (the page averages its channels)
    page.get_by_role("tab", name="Voice conversion").click()
    page.locator("#utterance input[type=file]").set_input_files(str(utterance))
    page.locator("#convert").click()
    page.wait_for_selector("#converted-audio audio[src]", state="attached", timeout=60_000)
    converted = page.evaluate(AUDIO_IN_THE_BROWSER, "#converted-audio audio")
    assert converted["peak"] > 0.02
    assert converted["seconds"] == pytest.approx(soundfile.info(str(utterance)).duration, abs=0.01)
    page.wait_for_function("document.querySelector('#converted-spectrogram img')?.naturalWidth > 0", timeout=30_000)

    # bad input: the pipeline's message on the page
    page.get_by_role("tab", name="New speech").click()
    page.locator("#seconds input").fill("0")
    page.locator("#speak").click()
    page.get_by_text("seconds must be a finite number > 0, got 0").wait_for(timeout=30_000)
    assert "Traceback" not in page.locator("body").inner_text()


def test_the_command_finds_the_default_bundle_and_explains_what_is_missing(image_bundle, speech_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv("VQGEN_BUNDLE", raising=False)
    monkeypatch.delenv("VQGEN_SPEECH_BUNDLE", raising=False)
    for task in ("vq-image-gen", "vq-speech-gen"):  # no demo bundles on this machine
        variable, _, command = pipelines.DEFAULT_BUNDLES[task]
        monkeypatch.setitem(pipelines.DEFAULT_BUNDLES, task, (variable, tmp_path / task, command))
    with pytest.raises(SystemExit) as exit:
        page_app.main([])
    assert "no model given and no local vq-image-gen bundle found" in str(exit.value.code)
    monkeypatch.setenv("VQGEN_SPEECH_BUNDLE", str(speech_bundle[0]))
    assert isinstance(page_app.load_generator(), pipelines.VQSpeechGenerationPipeline)  # the speech bundle when there is no image one
    monkeypatch.setenv("VQGEN_BUNDLE", str(image_bundle))
    assert isinstance(page_app.load_generator(), pipelines.VQImageGenerationPipeline)
    with pytest.raises(SystemExit) as exit:
        page_app.main(["--model", str(tmp_path / "nowhere")])
    assert "is neither a bundle folder on this machine nor a Hub repo id" in str(exit.value.code)


def test_without_gradio_the_core_works_and_the_app_names_the_extra(monkeypatch):
    # only pipelines/app.py imports gradio, so `import pipelines` works without it
    importers = [p.name for p in (REPO / "pipelines").glob("*.py") if "import gradio" in p.read_text()]
    assert importers == ["app.py"]
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` meets when it is not installed
    with pytest.raises(SystemExit) as exit:
        page_app.main(["--model", "unused"])
    assert 'pip install -e ".[app]"' in str(exit.value.code)


def files_of(commit: dict) -> dict[str, bytes]:
    return {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in commit["body"][1:] if op["key"] == "file"}


def test_push_to_hub_writes_a_card_with_samples_and_a_space_running_the_app(image_bundle, fake_hub, capsys):
    gradio = require("gradio")
    pipelines.push_to_hub(image_bundle, "me/vqgen-fmnist", token=FAKE_TOKEN, space=True)
    calls = [c for c in fake_hub if not c["path"].endswith("agent-harnesses")]
    assert all(c["authorization"] == f"Bearer {FAKE_TOKEN}" for c in calls)
    creates = [c["body"] for c in calls if c["path"] == "/api/repos/create"]
    repos = [(body["name"], body.get("type", "model"), body.get("sdk")) for body in creates]
    assert repos == [("vqgen-fmnist", "model", None), ("vqgen-fmnist", "space", "gradio")]  # the model first: the Space loads it
    model_commit, space_commit = [c for c in calls if "/commit/" in c["path"]]
    assert model_commit["path"] == "/api/models/me/vqgen-fmnist/commit/main"
    assert space_commit["path"] == "/api/spaces/me/vqgen-fmnist/commit/main"

    # the card: its picture is the pipeline's own samples, seed 0, a row of 4 per class
    model_files = files_of(model_commit)
    assert sorted(model_files) == ["README.md", "config.json", "model.safetensors", "samples.png"]
    card = model_files["README.md"].decode()
    assert "![Generated samples (seed 0), one row of 4 per class: `T-shirt/top`" in card and "](samples.png)" in card
    assert "[me/vqgen-fmnist](https://huggingface.co/spaces/me/vqgen-fmnist)" in card
    generate = pipelines.pipeline(model=image_bundle)
    expected = image_grid(generate(list(range(8)), num_images=4, seed=0), 4)
    picture = Image.open(io.BytesIO(model_files["samples.png"]))
    assert picture.size == expected.size == (4 * 84 + 3 * 2, 8 * 84 + 7 * 2)  # 28 px enlarged 3x, 2 px gaps
    assert np.array_equal(np.asarray(picture), np.asarray(expected))

    # the Space: Gradio at the tested version, vqgen's source and requirements, the same command
    space_files = files_of(space_commit)
    assert {"README.md", "app.py", "requirements.txt", "pipelines/app.py", "stage2_prior/bundle.py"} <= set(space_files)
    assert not any("__pycache__" in name for name in space_files)
    front_matter = yaml.safe_load(space_files["README.md"].decode().split("---")[1])
    assert front_matter["sdk"] == "gradio" and front_matter["sdk_version"] == gradio.__version__
    assert front_matter["app_file"] == "app.py" and front_matter["models"] == ["me/vqgen-fmnist"]
    assert len(front_matter["short_description"]) <= 60
    app_py = space_files["app.py"].decode()
    assert 'main(["--model", "me/vqgen-fmnist", "--host", "0.0.0.0", "--port", "7860"])' in app_py
    compile(app_py, "app.py", "exec")
    requirements = space_files["requirements.txt"].decode().splitlines()
    assert any(r.startswith("torch") for r in requirements) and not any("extra" in r or "pytest" in r for r in requirements)
    assert space_files["pipelines/app.py"] == (REPO / "pipelines" / "app.py").read_bytes()
    printed = capsys.readouterr()
    assert FAKE_TOKEN not in printed.out + printed.err


def test_a_speech_card_shows_spectrograms_and_a_bad_space_id_uploads_nothing(speech_bundle, fake_hub):
    bundle, _ = speech_bundle
    pipelines.push_to_hub(bundle, "me/vqgen-speech", token=FAKE_TOKEN)
    commit = [c for c in fake_hub if "/commit/" in c["path"]][-1]
    files = files_of(commit)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "spectrogram.png"]
    card = files["README.md"].decode()
    assert "![Mel spectrograms of 2.00 s of generated speech for `us-male-low`, `gb-female` (seed 0).](spectrogram.png)" in card
    assert "huggingface.co/spaces" not in card  # no Space asked for, none linked
    picture = np.asarray(Image.open(io.BytesIO(files["spectrogram.png"])).convert("L"))
    assert picture.shape[0] > 300 and picture.std() > 20  # two titled panels with something drawn in them
    fake_hub.clear()
    with pytest.raises(ValueError, match="space must be True .* or a Space id 'user/name', got 'speech-space'"):
        pipelines.push_to_hub(bundle, "me/vqgen-speech", token=FAKE_TOKEN, space="speech-space")
    assert not [c for c in fake_hub if not c["path"].endswith("agent-harnesses")]
