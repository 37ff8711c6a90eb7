"""Audio loading, Wav2Lip mel spectrograms, and the mel windows paired with video frames."""
