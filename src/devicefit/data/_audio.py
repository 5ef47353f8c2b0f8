"""Audio input and features in NumPy: 16-bit PCM WAV reading, framing, Hann-window power spectrum,
HTK mel filterbank, log-mel and MFCC (orthonormal DCT-II of log-mel), laid out (frames, coeffs).
"""

from __future__ import annotations

import io
import wave

import numpy as np

from devicefit.core import ConfigError, DataError

__all__ = [
    "dct_matrix",
    "fix_length",
    "frame_signal",
    "hann_window",
    "log_mel",
    "mel_center_frequencies_hz",
    "mel_filterbank",
    "mfcc",
    "num_frames",
    "read_wav",
]

LOG_FLOOR = 1e-6  # added to mel energies before the log so silence gives a finite value


def read_wav(data: bytes, display: str, *, sample_rate_hz: int = 8000) -> np.ndarray:
    """Decode a mono 16-bit PCM WAV at `sample_rate_hz` into float32 samples in [-1, 1).

    Anything else (not a RIFF/WAVE file, other rate, width or channel count) raises `DataError`
    naming `display`.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width_bytes, rate_hz = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError) as e:
        raise DataError(f"{display}: not a readable WAV file ({e})") from None
    got = (channels, 8 * width_bytes, rate_hz)
    if got != (1, 16, sample_rate_hz):
        raise DataError(f"{display}: expected mono 16-bit PCM at {sample_rate_hz} Hz, got {channels} channel(s), "
                        f"{8 * width_bytes}-bit, {rate_hz} Hz")
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def fix_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Crop to the first `length` samples or zero-pad at the end."""
    out = np.zeros(length, dtype=np.float32)
    n = min(length, len(samples))
    out[:n] = samples[:n]
    return out


def num_frames(num_samples: int, frame_length: int = 200, hop_length: int = 160) -> int:
    """Frames without centering: 1 + (num_samples - frame_length) // hop_length (8000, 200, 160 → 49)."""
    if num_samples < frame_length:
        raise ConfigError(f"signal of {num_samples} samples is shorter than one frame ({frame_length})")
    return 1 + (num_samples - frame_length) // hop_length


def frame_signal(x: np.ndarray, frame_length: int = 200, hop_length: int = 160) -> np.ndarray:
    """Split (..., T) into overlapping frames (..., frames, frame_length) without padding (a view)."""
    frames = num_frames(x.shape[-1], frame_length, hop_length)
    windows = np.lib.stride_tricks.sliding_window_view(x, frame_length, axis=-1)
    return windows[..., : (frames - 1) * hop_length + 1 : hop_length, :]


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (as `torch.hann_window` and spectral analysis use)."""
    n = np.arange(length)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / length)).astype(np.float32)


def _hz_to_mel(f_hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f_hz, dtype=np.float64) / 700.0)  # HTK mel scale


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _mel_edges_hz(n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """n_mels + 2 band edges, equally spaced on the mel scale."""
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(fmax_hz), n_mels + 2))


def mel_center_frequencies_hz(n_mels: int = 40, fmin_hz: float = 20.0, fmax_hz: float = 4000.0) -> np.ndarray:
    """Centre frequency of each mel band (Hz)."""
    return _mel_edges_hz(n_mels, fmin_hz, fmax_hz)[1:-1]


def mel_filterbank(n_mels: int = 40, n_fft: int = 256, sample_rate_hz: int = 8000, fmin_hz: float = 20.0,
                   fmax_hz: float | None = None) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), peak 1, over the rfft bin frequencies."""
    fmax_hz = sample_rate_hz / 2 if fmax_hz is None else fmax_hz
    if not 0 <= fmin_hz < fmax_hz <= sample_rate_hz / 2:
        raise ConfigError(f"mel band must satisfy 0 <= fmin_hz < fmax_hz <= {sample_rate_hz / 2}, "
                          f"got {fmin_hz}, {fmax_hz}")
    bins_hz = np.arange(n_fft // 2 + 1) * sample_rate_hz / n_fft
    edges = _mel_edges_hz(n_mels, fmin_hz, fmax_hz)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz[None] - lower) / (centre - lower)
    falling = (upper - bins_hz[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II basis (n_out, n_in): C[k, n] = s_k cos(pi (n + 0.5) k / n_in)."""
    if not 0 < n_out <= n_in:
        raise ConfigError(f"n_mfcc must be in 1..{n_in}, got {n_out}")
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None]
    basis = np.cos(np.pi * (n + 0.5) * k / n_in) * np.sqrt(2.0 / n_in)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


def log_mel(x: np.ndarray, *, sample_rate_hz: int = 8000, frame_length: int = 200, hop_length: int = 160,
            n_fft: int = 256, n_mels: int = 40, fmin_hz: float = 20.0, fmax_hz: float | None = None,
            chunk: int = 256) -> np.ndarray:
    """Log mel energies of signals (N, T) → (N, frames, n_mels) float32 (Hann window, no centering)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    fb = mel_filterbank(n_mels, n_fft, sample_rate_hz, fmin_hz, fmax_hz)  # M, F
    window = hann_window(frame_length)
    out = np.empty((x.shape[0], num_frames(x.shape[1], frame_length, hop_length), n_mels), dtype=np.float32)
    for i in range(0, x.shape[0], chunk):  # chunks bound the (B, frames, n_fft) spectrum memory
        frames = frame_signal(x[i:i + chunk], frame_length, hop_length) * window  # B, frames, L
        power = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2  # B, frames, F
        out[i:i + chunk] = np.log(power.astype(np.float32) @ fb.T + LOG_FLOOR)
    return out


def mfcc(x: np.ndarray, n_mfcc: int = 10, *, n_mels: int = 40, **log_mel_options: float) -> np.ndarray:
    """MFCCs of signals (N, T) → (N, frames, n_mfcc): orthonormal DCT-II over the log-mel axis."""
    basis = dct_matrix(n_mfcc, n_mels)  # K, M
    return log_mel(x, n_mels=n_mels, **log_mel_options) @ basis.T  # type: ignore[arg-type]
