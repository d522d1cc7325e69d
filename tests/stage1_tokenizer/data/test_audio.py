"""Audio data sources: reading and resampling files, bad files met where they are read, audio
folders, offline hub errors, and fixed-length crops replayed by (seed, epoch, index)."""

import io

import datasets
import huggingface_hub
import numpy as np
import pytest
import soundfile
import torch

from stage1_tokenizer.data import AudioCrops, AudioDataset, load_audio_folder, load_hub_audio_dataset, read_audio


def sine(frequency, seconds, rate, amplitude=0.5):
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_frequency(waveform, rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(waveform).reshape(-1)))
    return np.fft.rfftfreq(np.asarray(waveform).size, 1 / rate)[spectrum.argmax()]


# -- read_audio ------------------------------------------------------------------------------------
def test_resampling_keeps_a_sines_frequency_and_duration(tmp_path):
    path = tmp_path / "tone.wav"
    soundfile.write(path, sine(440, 1.0, 8000), 8000)
    waveform = read_audio(path, 16000)
    assert waveform.shape == (1, 16000) and waveform.dtype == torch.float32
    assert abs(peak_frequency(waveform, 16000) - 440) <= 1.0
    assert 0.45 < waveform.abs().max() <= 0.55  # amplitude kept, no new content above 4 kHz
    # bytes and datasets' {"bytes", "path"} dicts read the same
    data = path.read_bytes()
    assert torch.equal(read_audio(data, 16000), waveform)
    assert torch.equal(read_audio({"bytes": data, "path": "tone.wav"}, 16000), waveform)
    assert torch.equal(read_audio({"bytes": None, "path": str(path)}, 16000), waveform)
    assert torch.equal(read_audio(path, 8000)[0], torch.from_numpy(soundfile.read(path, dtype="float32")[0]))


def test_bad_files_name_the_file_and_the_fix(tmp_path):
    empty, silent, garbage = tmp_path / "empty.wav", tmp_path / "silent.wav", tmp_path / "garbage.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    soundfile.write(silent, np.zeros(1600, np.float32), 16000)
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(ValueError, match=r"empty\.wav holds no samples .*Remove it"):
        read_audio(empty, 16000)
    with pytest.raises(ValueError, match=r"silent\.wav contains only silence .*Remove it"):
        read_audio(silent, 16000)
    with pytest.raises(ValueError, match=r"garbage\.wav could not be read as audio \(soundfile: .*convert it"):
        read_audio(garbage, 16000)
    with pytest.raises(ValueError, match=r"missing\.wav could not be read"):
        read_audio(tmp_path / "missing.wav", 16000)
    with pytest.raises(ValueError, match=r"my clip could not be read"):
        read_audio(b"garbage", 16000, name="my clip")
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer"):
        read_audio(silent, 0)


def test_stereo_is_refused_unless_mixed(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = sine(300, 0.5, 16000, 0.6), sine(300, 0.5, 16000, 0.2)
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"stereo\.wav has 2 channels .*mix_to_mono=True"):
        read_audio(path, 16000)
    mixed = read_audio(path, 16000, mix_to_mono=True)
    torch.testing.assert_close(mixed[0], torch.from_numpy((left + right) / 2))


# -- AudioDataset and audio folders --------------------------------------------------------------------
@pytest.fixture
def two_speakers(tmp_path):
    """alice/: 300 Hz tones, bob/: 600 Hz tones, at 8 kHz, of 0.5 and 0.75 s."""
    root = tmp_path / "voices"
    for name, frequency in (("alice", 300), ("bob", 600)):
        (root / name).mkdir(parents=True)
        for i, seconds in enumerate([0.5, 0.75]):
            soundfile.write(root / name / f"{i}.wav", sine(frequency, seconds, 8000), 8000)
    return root


def test_audio_folder_speakers_and_resampled_lengths(two_speakers):
    (two_speakers / ".ipynb_checkpoints").mkdir()  # hidden folders are no speakers
    soundfile.write(two_speakers / ".ipynb_checkpoints" / "0.wav", sine(300, 0.5, 8000), 8000)
    dataset = load_audio_folder(two_speakers, 16000)
    assert len(dataset) == 4 and dataset.speakers == ["alice", "bob"] and dataset.sampling_rate == 16000
    for i in range(len(dataset)):
        item = dataset[i]
        waveform, speaker = item["input_values"], int(item["speaker"])
        assert item["speaker"].dtype == torch.long and item["speaker"].ndim == 0
        assert waveform.shape in ((1, 8000), (1, 12000)) and waveform.dtype == torch.float32
        assert abs(peak_frequency(waveform, 16000) - (300, 600)[speaker]) <= 2.0
    assert [int(dataset[i]["speaker"]) for i in range(4)] == [0, 0, 1, 1]
    batch = next(iter(torch.utils.data.DataLoader(AudioCrops(dataset, 4000), batch_size=4)))
    assert batch["input_values"].shape == (4, 1, 4000) and batch["speaker"].tolist() == [0, 0, 1, 1]


def test_bad_file_in_a_folder_raises_with_its_path_or_is_skipped(two_speakers):
    corrupt = two_speakers / "bob" / "2.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt broken")
    dataset = load_audio_folder(two_speakers, 16000)  # built without reading a file
    with pytest.raises(ValueError, match=r"audio file 4 \(.*bob/2\.wav\) could not be read.*on_bad_file='skip'"):
        dataset[4]
    dataset = load_audio_folder(two_speakers, 16000, on_bad_audio="skip")
    replaced = dataset[4]  # the next usable row (wrapping to the first) takes its place
    assert int(replaced["bad_files_skipped"]) == 1 and torch.equal(replaced["input_values"], dataset[0]["input_values"])
    assert int(dataset[3]["speaker"]) == 1 and int(dataset[3]["bad_files_skipped"]) == 0


def test_stereo_file_in_a_folder_needs_mix_to_mono_even_when_skipping(two_speakers):
    stereo = np.stack([sine(300, 0.5, 8000), sine(300, 0.5, 8000)], axis=1)
    soundfile.write(two_speakers / "alice" / "stereo.wav", stereo, 8000)
    dataset = load_audio_folder(two_speakers, 16000, on_bad_audio="skip")
    stereo_row = next(i for i in range(len(dataset)) if dataset.describe(i).endswith("/stereo.wav)"))
    with pytest.raises(ValueError, match=r"alice/stereo\.wav\) has 2 channels .*mix_to_mono=True"):
        dataset[stereo_row]  # a setting to change, not a bad file: raised under "skip" too
    mixed = load_audio_folder(two_speakers, 16000, mix_to_mono=True)
    assert len(mixed) == 5 and mixed[stereo_row]["input_values"].shape == (1, 8000)


def test_audio_folder_errors(tmp_path, two_speakers):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_audio_folder(tmp_path / "nowhere", 16000)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"holds no audio files \(looked for .*\.flac.*\.wav"):
        load_audio_folder(tmp_path / "texts", 16000)
    with pytest.raises(ValueError, match="on_bad_file must be one of"):
        load_audio_folder(two_speakers, 16000, on_bad_audio="ignore")
    soundfile.write(two_speakers / "loose.wav", sine(300, 0.5, 8000), 8000)
    with pytest.raises(ValueError, match=r"mixes files at its top level \(loose\.wav\)"):
        load_audio_folder(two_speakers, 16000)


def wav_bytes(waveform, rate):
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format="WAV")
    return buffer.getvalue()


def test_audio_dataset_speaker_columns_and_all_bad():
    clips = [wav_bytes(sine(f, 0.25, 16000), 16000) for f in (200, 400, 800)]
    audio = [{"bytes": clip, "path": None} for clip in clips]
    by_name = datasets.Dataset.from_dict({"audio": audio, "speaker_id": ["p260", "p225", "p260"]})
    dataset = AudioDataset(by_name.cast_column("audio", datasets.Audio(decode=False)), 16000)
    assert dataset.speakers == ["p225", "p260"]  # sorted names, ids in that order
    assert [int(dataset[i]["speaker"]) for i in range(3)] == [1, 0, 1]
    assert dataset[2]["input_values"].shape == (1, 4000)

    by_id = datasets.Dataset.from_dict({"audio": audio, "speaker": [7, 3, 7]})
    dataset = AudioDataset(by_id.cast_column("audio", datasets.Audio()), 8000)  # decode=True is cast away
    assert dataset.speakers is None and [int(dataset[i]["speaker"]) for i in range(3)] == [7, 3, 7]
    assert dataset[0]["input_values"].shape == (1, 2000)

    unnamed = datasets.Dataset.from_dict({"clip": audio}).cast_column("clip", datasets.Audio(decode=False))
    assert int(AudioDataset(unnamed, 16000)[0]["speaker"]) == -1
    with pytest.raises(ValueError, match=r"no audio column .*cast_column"):
        AudioDataset(datasets.Dataset.from_dict({"path": ["a.wav"]}), 16000)

    silent = [{"bytes": wav_bytes(np.zeros(400, np.float32), 16000), "path": f"{i}.wav"} for i in range(2)]
    all_silent = datasets.Dataset.from_dict({"audio": silent}).cast_column("audio", datasets.Audio(decode=False))
    with pytest.raises(ValueError, match=r"0\.wav\) contains only silence"):
        AudioDataset(all_silent, 16000)[0]
    with pytest.raises(ValueError, match=r"none of the 2 audio files of this dataset can be used"):
        AudioDataset(all_silent, 16000, on_bad_audio="skip")[0]


def test_hub_dataset_offline_error_suggests_local_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the variables at import, so set their flags too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"could not be loaded offline.*load_audio_folder.*SyntheticSpeech"):
        load_hub_audio_dataset("vqgen-tests/no-such-speech", "train", 16000, load_kwargs={"cache_dir": str(tmp_path)})


# -- AudioCrops ---------------------------------------------------------------------------------------
class Utterances(torch.utils.data.Dataset):
    """A minimal source: fixed random waveforms of the given lengths."""

    sampling_rate, speakers = 16000, ["a", "b"]

    def __init__(self, lengths):
        generator = torch.Generator().manual_seed(1)
        self.waveforms = [torch.rand(1, n, generator=generator) * 2 - 1 for n in lengths]

    def __len__(self):
        return len(self.waveforms)

    def __getitem__(self, index):
        return {"input_values": self.waveforms[index], "speaker": torch.tensor(index % 2)}


def test_random_crops_are_slices_drawn_from_seed_epoch_and_index():
    source = Utterances([1000, 700, 64])
    crops = AudioCrops(source, 64, seed=5)
    assert len(crops) == 3 and crops.sampling_rate == 16000 and crops.speakers == ["a", "b"]
    starts = {}
    for epoch in range(10):
        crops.set_epoch(epoch)
        for i in (0, 1):
            crop = crops[i]["input_values"]
            windows = source.waveforms[i][0].unfold(0, 64, 1)  # every 64-sample slice
            matches = (windows == crop[0]).all(dim=1).nonzero().flatten().tolist()
            assert crop.shape == (1, 64) and len(matches) == 1
            starts[epoch, i] = matches[0]
    assert len(set(starts.values())) > 10  # random starts, not one fixed window
    # the same (seed, epoch, index) cuts the same crop, whatever was drawn before or elsewhere
    again = AudioCrops(source, 64, seed=5)
    again.set_epoch(3)
    torch.manual_seed(123)
    assert torch.equal(again[1]["input_values"][0], source.waveforms[1][0, starts[3, 1] : starts[3, 1] + 64])
    other_seed = AudioCrops(source, 64, seed=6)
    other_seed.set_epoch(3)
    assert not torch.equal(other_seed[1]["input_values"], again[1]["input_values"])
    assert torch.equal(crops[2]["input_values"], source.waveforms[2])  # exactly segment_length long


def test_deterministic_crops_are_centered_and_short_clips_padded():
    source = Utterances([1000, 30])
    crops = AudioCrops(source, 100, random=False)
    torch.manual_seed(0)
    center = crops[0]["input_values"]
    torch.manual_seed(1)
    assert torch.equal(crops[0]["input_values"], center)
    assert torch.equal(center, source.waveforms[0][:, 450:550])
    padded = AudioCrops(source, 100)[1]
    assert padded["input_values"].shape == (1, 100) and int(padded["speaker"]) == 1
    assert torch.equal(padded["input_values"][:, :30], source.waveforms[1])
    assert not padded["input_values"][:, 30:].any()
    for bad in (0, -5, 2.5):
        with pytest.raises(ValueError, match="segment_length must be a positive number of samples"):
            AudioCrops(source, bad)
