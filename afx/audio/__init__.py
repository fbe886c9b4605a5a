"""Audio features (jittable, batched, librosa's names and defaults), file I/O and synthesis.

  mel = afx.audio.log_mel_spectrogram(waveforms, sample_rate=16000, n_fft=512, hop_length=160, n_mels=96)
  features = afx.audio.ast_features(waveforms)  # Kaldi filterbank as the Audio Spectrogram Transformer takes it
  audio, rate = afx.audio.load_audio("clip.flac", sample_rate=16000)
"""

from afx.audio import synthesis
from afx.audio.features import (hz_to_mel, log_mel_spectrogram, mel_filterbank, mel_spectrogram, mel_to_hz,
                                mu_law_decode, mu_law_encode, power_to_db, stft)
from afx.audio.io import load_audio, write_audio
from afx.audio.kaldi import ast_features, fbank

__all__ = ["ast_features", "fbank", "hz_to_mel", "load_audio", "log_mel_spectrogram", "mel_filterbank",
           "mel_spectrogram", "mel_to_hz", "mu_law_decode", "mu_law_encode", "power_to_db", "stft", "synthesis",
           "write_audio"]
