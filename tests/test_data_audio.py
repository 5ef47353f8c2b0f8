"""Audio features: frame count, filterbank and DCT properties, and that a pure tone's energy lands
in the mel band around its frequency (log-mel) and is captured by the MFCC → log-mel inverse."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from devicefit.core import ConfigError, DataError
from devicefit.data import dct_matrix, log_mel, mel_center_frequencies_hz, mel_filterbank, mfcc, read_wav
from devicefit.data._audio import frame_signal, hann_window, num_frames


def _tone(freq_hz: float, n: int = 8000, rate_hz: int = 8000) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate_hz)).astype(np.float32)


def test_frames_without_centering() -> None:
    assert num_frames(8000, 200, 160) == 49
    x = np.arange(8000, dtype=np.float32)[None]
    frames = frame_signal(x)
    assert frames.shape == (1, 49, 200)
    assert frames[0, 1, 0] == 160 and frames[0, -1, -1] == 48 * 160 + 199
    assert hann_window(200)[0] == 0 and hann_window(200)[100] == pytest.approx(1.0)


def test_feature_shapes() -> None:
    x = np.stack([_tone(500), _tone(1500)])
    assert log_mel(x).shape == (2, 49, 40) and log_mel(x).dtype == np.float32
    assert mfcc(x).shape == (2, 49, 10)
    assert mfcc(x, 13).shape == (2, 49, 13)


def test_filterbank_covers_every_band() -> None:
    fb = mel_filterbank(40, 256, 8000)
    assert fb.shape == (40, 129) and fb.max() <= 1.0
    assert (fb.sum(axis=1) > 0).all()  # no empty band even at the narrow low end
    assert np.all(np.diff(fb.argmax(axis=1)) >= 0)  # band peaks rise with frequency


def test_dct_is_orthonormal() -> None:
    basis = dct_matrix(40, 40)
    assert np.allclose(basis @ basis.T, np.eye(40), atol=1e-5)
    assert np.allclose(basis[0], 1 / np.sqrt(40))
    with pytest.raises(ConfigError, match=r"n_mfcc"):
        dct_matrix(41, 40)


@pytest.mark.parametrize("freq_hz", [250.0, 700.0, 1000.0, 2500.0])
def test_pure_tone_peaks_in_its_mel_band(freq_hz: float) -> None:
    energies = log_mel(_tone(freq_hz)[None])[0].mean(axis=0)  # mean over frames → (40,)
    expected_band = int(np.argmin(np.abs(mel_center_frequencies_hz(40) - freq_hz)))
    assert abs(int(energies.argmax()) - expected_band) <= 1
    assert energies.max() - np.median(energies) > 5  # a clear peak, in nats of energy


def test_mfcc_is_the_dct_of_log_mel() -> None:
    x = _tone(1000)[None]
    full = mfcc(x, 40)
    assert np.allclose(full @ dct_matrix(40, 40), log_mel(x), atol=1e-3)  # orthonormal → inverse is transpose
    assert np.allclose(mfcc(x, 10), full[..., :10], atol=1e-4)


def _wav_bytes(samples: np.ndarray, rate_hz: int = 8000, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(rate_hz)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def test_read_wav_scales_and_checks() -> None:
    samples = np.array([0, 16384, -32768, 32767], dtype="<i2")
    assert read_wav(_wav_bytes(samples), "a.wav").tolist() == pytest.approx([0, 0.5, -1.0, 32767 / 32768])
    with pytest.raises(DataError, match=r"b.wav: expected mono 16-bit PCM at 8000 Hz.*8-bit"):
        read_wav(_wav_bytes(np.zeros(4, np.uint8), width=1), "b.wav")
    with pytest.raises(DataError, match=r"c.wav: not a readable WAV"):
        read_wav(b"ID3 mp3 bytes", "c.wav")
