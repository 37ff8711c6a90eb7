"""Diff2Lip's diffusion package: the TFG UNet, the Gaussian diffusion process and its helpers."""
