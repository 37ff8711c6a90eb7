"""Metrics of generated lip-sync videos: FID (full frame and mouth region), PSNR / SSIM and LMD."""
