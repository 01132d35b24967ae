"""The cost report: python -m visionattn.bench."""
